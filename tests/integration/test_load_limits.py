"""Concurrency: the max_requests 503, max_workers queueing, many parallel runs, and several server workers."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

pytestmark = pytest.mark.integration

TOO_MANY_REQUESTS = {"code": -503, "message": "Too many requests", "data": None}


async def _post_runs(server, codes: list[str], timeout: float = 30.0) -> list[tuple[httpx.Response, float]]:
    """Sends all runs at once on separate connections; returns (response, seconds) in the order of `codes`."""
    limits = httpx.Limits(max_connections=len(codes), max_keepalive_connections=len(codes))
    async with httpx.AsyncClient(
        base_url=server.url,
        headers={"X-Api-Key": server.api_key},
        timeout=timeout,
        limits=limits,
        trust_env=False,
    ) as client:

        async def one(code: str) -> tuple[httpx.Response, float]:
            start = time.monotonic()
            body = {"language": "python3", "code": code, "preload": "", "enable_network": True}
            resp = await client.post("/v1/sandbox/run", json=body)
            return resp, time.monotonic() - start

        return await asyncio.gather(*(one(code) for code in codes))


def post_runs(server, codes: list[str], timeout: float = 30.0) -> list[tuple[httpx.Response, float]]:
    return asyncio.run(_post_runs(server, codes, timeout))


def marker_code(i: int) -> str:
    return f'import sys, time\ntime.sleep(0.05)\nprint("out-{i}")\nprint("err-{i}", file=sys.stderr)'


def assert_own_outputs(results):
    for i, (resp, _) in enumerate(results):
        assert resp.status_code == 200, (i, resp.status_code, resp.text)
        body = resp.json()
        assert body["code"] == 0, (i, body)
        assert body["data"] == {"stdout": f"out-{i}\n", "stderr": f"err-{i}\n", "error": "", "exit_code": 0}, i


@pytest.mark.slow
def test_max_requests_gives_503_and_max_workers_queues(start_server):
    """Scenario: MAX_REQUESTS=2 and MAX_WORKERS=1 with 4 simultaneous one-second runs.

    1. Two runs are admitted (one executes, one waits for the single worker slot); they succeed.
    2. The other two get HTTP 503 with the exact -503 envelope, without waiting.
    3. The queued run finishes about a second after the first (MAX_WORKERS=1 serialises them).
    """
    server = start_server(MAX_REQUESTS=2, MAX_WORKERS=1)
    results = post_runs(server, ['import time\ntime.sleep(1)\nprint("slept")'] * 4)
    rejected = [(resp, secs) for resp, secs in results if resp.status_code == 503]
    admitted = [(resp, secs) for resp, secs in results if resp.status_code != 503]
    summary = [(resp.status_code, resp.text[:200], round(secs, 2)) for resp, secs in results]
    assert len(rejected) == 2, summary
    for resp, secs in rejected:
        assert resp.json() == TOO_MANY_REQUESTS
        assert secs < 0.9, summary
    for resp, _ in admitted:
        assert resp.status_code == 200, summary
        assert resp.json()["data"]["stdout"] == "slept\n", summary
    durations = sorted(secs for _, secs in admitted)
    assert durations[0] >= 0.9, summary
    assert durations[1] >= 1.9, f"MAX_WORKERS=1 should serialise the two admitted runs: {summary}"
    # Capacity is back once they are done.
    assert server.run_ok('print("free again")')["stdout"] == "free again\n"


def test_fifty_concurrent_runs_get_their_own_output(server):
    """50 runs sent at once all succeed, each with exactly its own stdout and stderr."""
    results = post_runs(server, [marker_code(i) for i in range(50)])
    assert_own_outputs(results)


def test_two_server_workers(start_server):
    """Scenario: SANDBOX_WORKERS=2.

    1. The server has one zygote per worker: two in all.
    2. 20 simultaneous runs all succeed with their own output.
    3. SIGTERM to the main process: it exits 0 within 10 s and leaves no process behind.
    """
    server = start_server(SANDBOX_WORKERS=2)
    deadline = time.monotonic() + 5
    while len(server.zygotes()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(server.zygotes()) == 2, [p.cmdline() for p in server.descendants()]

    assert_own_outputs(post_runs(server, [marker_code(i) for i in range(20)]))

    server.descendants()  # remember every process for the leak check
    assert server.terminate() == 0
    left = server.wait_no_survivors()
    assert not left, [(p.pid, p.cmdline()) for p in left]
