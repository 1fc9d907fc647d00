"""P2: 500 runs that each sleep 2 s, sent at once; all must succeed and the last must answer within 3 s.

This is what a burst of slow-but-idle code nodes (HTTP calls, sleeps) looks like; a server with a small fixed
worker pool (the official default is 4) queues them and takes minutes.
"""

from __future__ import annotations

import asyncio
import ssl
import time

import httpx

from bench.context import BenchContext, Scenario
from bench.payloads import HEADERS, RUN_PATH, SLEEP_CODE, SLEEP_STDOUT, is_ok_run, run_body
from bench.report import ScenarioResult
from bench.stats import percentile

RUNS = 500
RUNS_PER_CLIENT = 20
CLIENT_TIMEOUT_SECONDS = 60.0
TARGET_WALL_SECONDS = 3.0


async def _burst(base_url: str) -> tuple[float, list[float], list[str]]:
    """Send all runs at once; return the wall time, each run's end offset and the failures.

    The runs are spread over several clients of ``RUNS_PER_CLIENT`` connections each: httpcore re-scans every
    connection of a pool for every queued request whenever one finishes, so a single client with 500 connections
    spends about 8 s of CPU on bookkeeping and the bench would measure itself (the same burst against a server
    that only awaits ``asyncio.sleep(2)`` takes 10 s with one client and 2.6 s with 25).
    """
    tls = ssl.create_default_context()  # loaded once instead of once per client; the server is plain HTTP anyway
    limits = httpx.Limits(max_connections=RUNS_PER_CLIENT, max_keepalive_connections=RUNS_PER_CLIENT)
    clients = [
        httpx.AsyncClient(base_url=base_url, headers=HEADERS, limits=limits, timeout=CLIENT_TIMEOUT_SECONDS, verify=tls)
        for _ in range(RUNS // RUNS_PER_CLIENT)
    ]
    failures: list[str] = []
    ends: list[float] = []

    async def one(client: httpx.AsyncClient) -> None:
        try:
            response = await client.post(RUN_PATH, json=run_body(SLEEP_CODE))
            if response.status_code != 200 or not is_ok_run(response.json(), SLEEP_STDOUT):
                failures.append(f"HTTP {response.status_code}: {response.text[:200]}")
        except (httpx.HTTPError, ValueError) as exc:
            failures.append(f"{type(exc).__name__}: {exc!r}")
        ends.append(time.perf_counter() - start)

    try:
        start = time.perf_counter()
        await asyncio.gather(*(one(clients[i % len(clients)]) for i in range(RUNS)))
    finally:
        for client in clients:
            await client.aclose()
    return max(ends), ends, failures


def run(ctx: BenchContext) -> ScenarioResult:
    server = ctx.require_server()
    result = ScenarioResult("P2", f"{RUNS} concurrent runs of time.sleep(2)")
    wall, ends, failures = asyncio.run(_burst(server.base_url))
    succeeded = RUNS - len(failures)
    result.add("succeeded", f"{succeeded}/{RUNS}", target=f"{RUNS}/{RUNS}", ok=not failures)
    result.add("wall time", wall, "s", f"<= {TARGET_WALL_SECONDS:g}", wall <= TARGET_WALL_SECONDS)
    result.add("first / median answer", f"{min(ends):.2f} / {percentile(ends, 50):.2f}", "s")
    result.details = {"wall_seconds": wall, "end_offsets_seconds": sorted(ends), "failures": failures[:20]}
    return result


SCENARIO = Scenario("P2", "concurrent sleeps", needs_server=True, run=run)
