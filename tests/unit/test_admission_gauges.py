"""The in-flight and waiting gauges follow admission, including a run that gives up while it waits."""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import CollectorRegistry

from dify_sandbox.admission import Admission
from dify_sandbox.metrics import SandboxMetrics


def gauges(registry: CollectorRegistry) -> tuple[float | None, float | None]:
    return (
        registry.get_sample_value("dify_sandbox_runs_in_flight"),
        registry.get_sample_value("dify_sandbox_runs_waiting"),
    )


def test_gauges_count_waiting_running_and_abandoned_runs() -> None:
    registry = CollectorRegistry()
    admission = Admission(max_requests=10, max_workers=1, metrics=SandboxMetrics(registry))
    seen: dict[str, tuple[float | None, float | None]] = {}

    async def hold(until: asyncio.Event) -> None:
        async with admission.admit():
            await until.wait()

    async def scenario() -> None:
        first_done, later_done = asyncio.Event(), asyncio.Event()
        first = asyncio.create_task(hold(first_done))
        await asyncio.sleep(0)
        seen["one running"] = gauges(registry)
        abandoned = asyncio.create_task(hold(later_done))
        await asyncio.sleep(0)
        seen["one waiting"] = gauges(registry)
        abandoned.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await abandoned
        seen["waiter gave up"] = gauges(registry)
        later = asyncio.create_task(hold(later_done))
        await asyncio.sleep(0)
        first_done.set()
        await first
        await asyncio.sleep(0)
        seen["second running"] = gauges(registry)
        later_done.set()
        await later
        seen["all done"] = gauges(registry)

    asyncio.run(scenario())
    assert seen == {
        "one running": (1, 0),
        "one waiting": (2, 1),
        "waiter gave up": (1, 0),
        "second running": (1, 0),
        "all done": (0, 0),
    }
