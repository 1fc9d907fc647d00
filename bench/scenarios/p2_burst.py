"""P2: 500 runs that each sleep 2 s, sent at once; all must succeed and the last must answer within 3 s.

This is what a burst of slow-but-idle code nodes (HTTP calls, sleeps) looks like; a server with a small fixed
worker pool (the official default is 4) queues them and takes minutes.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from bench.context import BenchContext, Scenario
from bench.payloads import HEADERS, RUN_PATH, SLEEP_CODE, SLEEP_STDOUT, is_ok_run, run_body
from bench.report import ScenarioResult
from bench.stats import percentile

RUNS = 500
MAX_CONNECTIONS = 600
CLIENT_TIMEOUT_SECONDS = 60.0
TARGET_WALL_SECONDS = 3.0


async def _burst(base_url: str) -> tuple[float, list[float], list[str]]:
    """Send all runs at once; return the wall time, each run's end offset and the failures."""
    limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS)
    failures: list[str] = []
    ends: list[float] = []
    async with httpx.AsyncClient(
        base_url=base_url, headers=HEADERS, limits=limits, timeout=CLIENT_TIMEOUT_SECONDS
    ) as client:
        start = time.perf_counter()

        async def one() -> None:
            try:
                response = await client.post(RUN_PATH, json=run_body(SLEEP_CODE))
                ok = response.status_code == 200 and is_ok_run(response.json(), SLEEP_STDOUT)
                if not ok:
                    failures.append(f"HTTP {response.status_code}: {response.text[:200]}")
            except (httpx.HTTPError, ValueError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            ends.append(time.perf_counter() - start)

        await asyncio.gather(*(one() for _ in range(RUNS)))
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
