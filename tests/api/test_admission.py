"""Admission: ``MAX_REQUESTS`` runs in flight (waiting ones included) and then HTTP 503; no new runs while draining."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import Api, MakeApi

pytestmark = [pytest.mark.api, pytest.mark.anyio]

TOO_MANY = b'{"code":-503,"message":"Too many requests","data":null}'
SHUTTING_DOWN = b'{"code":-503,"message":"server is shutting down","data":null}'


async def test_run_beyond_max_requests_is_503(make_api: MakeApi, run_path: str) -> None:
    """Scenario: MAX_REQUESTS=2 runs in flight make the next one a 503, and it clears once they finish.

    1. Hold the executor and start two runs; wait until both are in it.
    2. A third run: HTTP 503 with the exact -503 envelope, never reaching the executor.
    3. Release: the two held runs answer 200, and a new run is served again.
    """
    api = await make_api(run_path, max_requests=2, max_workers=2)
    api.python.hold()
    held = [asyncio.create_task(api.run(f"print({n})")) for n in range(2)]
    await api.python.wait_for_runs(2)
    resp = await api.run("print('third')")
    assert (resp.status_code, resp.content) == (503, TOO_MANY)
    assert len(api.python.requests) == 2
    api.python.release()
    assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
    assert (await api.run()).json()["code"] == 0


async def test_waiting_runs_count_towards_max_requests(make_api: MakeApi, run_path: str) -> None:
    """A run waiting for a MAX_WORKERS slot is in flight too: with one slot and MAX_REQUESTS=2, the third is 503."""
    api = await make_api(run_path, max_requests=2, max_workers=1)
    admission = api.service.admission
    api.python.hold()
    first = asyncio.create_task(api.run("print('first')"))
    await api.python.wait_for_runs(1)
    second = asyncio.create_task(api.run("print('second')"))
    await api.until(lambda: admission.in_flight == 2)
    assert (admission.running, admission.waiting) == (1, 1)
    resp = await api.run("print('third')")
    assert (resp.status_code, resp.content) == (503, TOO_MANY)
    api.python.release()
    assert [(await task).json()["code"] for task in (first, second)] == [0, 0]
    assert [r.code for r in api.python.requests] == ["print('first')", "print('second')"]


async def test_runs_share_one_limit_across_languages(make_api: MakeApi, run_path: str) -> None:
    """python3 and nodejs runs count against the same MAX_REQUESTS."""
    api = await make_api(run_path, max_requests=1, max_workers=1)
    api.nodejs.hold()
    node = asyncio.create_task(api.run("console.log(1)", language="nodejs"))
    await api.nodejs.wait_for_runs(1)
    assert (await api.run()).status_code == 503
    api.nodejs.release()
    assert (await node).json()["code"] == 0


async def test_rejected_runs_are_counted(make_api: MakeApi, run_path: str) -> None:
    """A run refused for overload shows in dify_sandbox_runs_total with outcome "rejected"."""
    api = await make_api(run_path, max_requests=1, max_workers=1)
    api.python.hold()
    held = asyncio.create_task(api.run())
    await api.python.wait_for_runs(1)
    assert (await api.run()).status_code == 503
    api.python.release()
    await held
    value = api.service.registry.get_sample_value(
        "dify_sandbox_runs_total", {"language": "python3", "outcome": "rejected"}
    )
    assert value == 1.0


async def test_run_while_draining_is_503(run_api: Api) -> None:
    """Once shutdown begins, a new run is refused with HTTP 503 and nothing runs."""
    run_api.service.admission.draining = True
    resp = await run_api.run()
    assert (resp.status_code, resp.content) == (503, SHUTTING_DOWN)
    assert run_api.python.requests == []


async def test_runs_in_flight_when_draining_begins_still_answer(run_api: Api) -> None:
    """Draining refuses new runs but lets the admitted ones finish with their result."""
    run_api.python.hold()
    held = asyncio.create_task(run_api.run())
    await run_api.python.wait_for_runs(1)
    run_api.service.admission.draining = True
    assert (await run_api.client.get("/health")).status_code == 503
    assert (await run_api.run()).content == SHUTTING_DOWN
    run_api.python.release()
    resp = await held
    assert (resp.status_code, resp.json()["data"]["stdout"]) == (200, "ran python3\n")
    assert run_api.service.admission.in_flight == 0
