"""P2: 500 runs that each sleep 2 s, sent at once; all must succeed and the last must answer within 3 s.

This is what a burst of slow-but-idle code nodes (HTTP calls, sleeps) looks like; a server with a small fixed
worker pool (the official default is 4) queues them and takes minutes. The client is plain asyncio streams with one
pre-built request (``bench/rawhttp.py``): the 500 connections are opened first, outside the timed window, then the
clock starts right before the first request is written and stops when the last full response has been read. httpx
took about 2.6 s for the same burst against a server that only sleeps, most of the 3 s budget; this client's floor
is in ``bench/README.md``. It runs on uvloop, as the server does, so it takes as little of the machine's CPU as
it can from the server it measures.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import uvloop

from bench.context import BenchContext, Scenario
from bench.cpu import MachineWindow, own_seconds
from bench.payloads import HEADERS, RUN_PATH, SLEEP_CODE, SLEEP_STDOUT, is_ok_run, run_body
from bench.rawhttp import HttpError, build_request, read_response
from bench.report import ScenarioResult
from bench.stats import percentile

RUNS = 500
RESPONSE_TIMEOUT_SECONDS = 60.0
TARGET_WALL_SECONDS = 3.0


@dataclass(slots=True)
class BurstOutcome:
    """End offsets are seconds from the first write; ``connect_seconds`` (not in the wall time) opened them all."""

    connect_seconds: float = 0.0
    ends: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return max(self.ends)


async def burst(host: str, port: int, runs: int = RUNS) -> BurstOutcome:
    """Open ``runs`` connections, write the sleep request on each, and read every response."""
    outcome = BurstOutcome()
    request = build_request("POST", host, port, RUN_PATH, json.dumps(run_body(SLEEP_CODE)).encode(), HEADERS)
    opened = time.perf_counter()
    connections = await asyncio.gather(*(asyncio.open_connection(host, port) for _ in range(runs)))
    outcome.connect_seconds = time.perf_counter() - opened

    async def answer(reader: asyncio.StreamReader, start: float) -> None:
        try:
            response = await asyncio.wait_for(read_response(reader), RESPONSE_TIMEOUT_SECONDS)
            if response.status != 200 or not is_ok_run(response.json(), SLEEP_STDOUT):
                outcome.failures.append(f"HTTP {response.status}: {response.body[:200]!r}")
        except (HttpError, OSError, TimeoutError, ValueError) as exc:
            outcome.failures.append(f"{type(exc).__name__}: {exc!r}")
        outcome.ends.append(time.perf_counter() - start)

    try:
        start = time.perf_counter()
        for _, writer in connections:
            writer.write(request)  # a few hundred bytes: the transport sends at once, no drain needed
        await asyncio.gather(*(answer(reader, start) for reader, _ in connections))
    finally:
        for _, writer in connections:
            writer.close()
        await asyncio.gather(*(writer.wait_closed() for _, writer in connections), return_exceptions=True)
    return outcome


def run(ctx: BenchContext) -> ScenarioResult:
    server = ctx.require_server()
    result = ScenarioResult("P2", f"{RUNS} concurrent runs of time.sleep(2)")
    window, cpu_start, own_start = MachineWindow.open(), server.cpu_seconds(), own_seconds()
    outcome = uvloop.run(burst(server.host, server.port))
    server_cpu, own_cpu = server.cpu_seconds() - cpu_start, own_seconds() - own_start
    window.close()
    wall, ends = outcome.wall, outcome.ends
    succeeded = RUNS - len(outcome.failures)
    result.add("succeeded", f"{succeeded}/{RUNS}", target=f"{RUNS}/{RUNS}", ok=not outcome.failures)
    result.add("wall time", wall, "s", f"<= {TARGET_WALL_SECONDS:g}", wall <= TARGET_WALL_SECONDS)
    result.add("first / median answer", f"{min(ends):.2f} / {percentile(ends, 50):.2f}", "s")
    result.add("connect (not timed)", outcome.connect_seconds, "s")
    result.add("client CPU", own_cpu, "s")
    result.add("background load", window.background_cores(server_cpu + own_cpu), "cores")
    result.details = {
        "wall_seconds": wall,
        "connect_seconds": outcome.connect_seconds,
        "server_cpu_seconds": server_cpu,
        "client_cpu_seconds": own_cpu,
        "end_offsets_seconds": sorted(ends),
        "failures": outcome.failures[:20],
    }
    return result


SCENARIO = Scenario("P2", "concurrent sleeps", needs_server=True, run=run)
