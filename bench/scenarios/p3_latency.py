"""P3: sequential latency of a trivial run through the server, next to a fresh interpreter per run.

The baseline is the official model's floor: ``python -I -c code`` started and waited for, with none of the
official service's extra work (prescript, seccomp, chroot), so the ratio understates our advantage. Baseline runs
are interleaved with server runs so both see the same machine noise, and so are ``GET /health`` requests: their
latency is the HTTP floor (client, framework, loopback), so ``server p50 - HTTP floor p50`` is the cost of a run.
The client is a raw keep-alive socket with pre-built requests (``bench/rawhttp.py``): httpx alone would add about
0.4 ms per request, nearly the whole budget of the thread executor.

With ``--isolations`` naming two or more values, one measurement covers all the executor's servers at once, one
connection each, their runs alternating, so the difference of their figures is not the machine's drift between
two measurements taken one after the other.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.context import BenchContext, Scenario
from bench.cpu import MachineWindow, own_seconds
from bench.payloads import HEADERS, RUN_PATH, TRIVIAL_CODE, TRIVIAL_STDOUT, is_ok_run, run_body
from bench.rawhttp import BlockingConnection, RawResponse, build_request
from bench.report import ScenarioResult
from bench.server import Server
from bench.stats import percentile

WARMUP_RUNS = 20
SERVER_RUNS = 300
BASELINE_RUNS = 50
HEALTH_REQUESTS = 100
REQUEST_TIMEOUT_SECONDS = 10.0
TARGET_P50_MS = {"fork": 3.0, "thread": 0.5}
TARGET_SPEEDUP = 10.0


def _fresh_interpreter_ms(python: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run([python, "-I", "-c", TRIVIAL_CODE], capture_output=True, check=True)
    elapsed = (time.perf_counter() - start) * 1000
    if proc.stdout.decode() != TRIVIAL_STDOUT:
        raise RuntimeError(f"baseline printed {proc.stdout!r}")
    return elapsed


def is_ok(response: RawResponse, stdout: str) -> bool:
    """HTTP 200 with a successful run that printed exactly ``stdout``."""
    try:
        return response.status == 200 and is_ok_run(response.json(), stdout)
    except ValueError:
        return False


def timed(connection: BlockingConnection, request: bytes) -> tuple[float, RawResponse]:
    """Milliseconds from writing ``request`` to having read the whole response."""
    start = time.perf_counter()
    response = connection.request(request)
    return (time.perf_counter() - start) * 1000, response


@dataclass(slots=True)
class _Target:
    """One server of the measurement: its connection, pre-built requests and samples."""

    server: Server
    connection: BlockingConnection
    run_request: bytes
    health_request: bytes
    server_ms: list[float] = field(default_factory=list)
    health_ms: list[float] = field(default_factory=list)
    failures: int = 0
    cpu_seconds: float = 0.0

    @classmethod
    def open(cls, server: Server) -> _Target:
        body = json.dumps(run_body(TRIVIAL_CODE)).encode()
        return cls(
            server,
            BlockingConnection(server.host, server.port, REQUEST_TIMEOUT_SECONDS),
            build_request("POST", server.host, server.port, RUN_PATH, body, HEADERS),
            build_request("GET", server.host, server.port, "/health"),
        )


def measure(ctx: BenchContext, servers: Sequence[Server]) -> list[ScenarioResult]:
    """P3 on every server of ``servers`` at once, one result each (in their order).

    Each server gets its own keep-alive connection, the same warm-up and timed runs and its own ``GET /health``
    floor, as when measured alone; run ``i`` goes to server ``i mod n``, so all of them see the same machine
    noise and their difference is the cost of what tells them apart. The fresh-interpreter baseline runs once
    per turn over the servers and is shared by all of them.
    """
    targets = [_Target.open(server) for server in servers]
    n = len(targets)
    title = f"sequential print(1), {SERVER_RUNS} runs vs fresh interpreter"
    title += f", interleaved over {n} servers" if n > 1 else ""
    target_p50 = TARGET_P50_MS.get(ctx.executor or "fork", TARGET_P50_MS["fork"])
    baseline_ms: list[float] = []
    baseline_every, health_every = SERVER_RUNS // BASELINE_RUNS, SERVER_RUNS // HEALTH_REQUESTS
    window, own_start = MachineWindow.open(), own_seconds()
    for target in targets:
        target.cpu_seconds = target.server.cpu_seconds()
    with contextlib.ExitStack() as stack:
        for target in targets:
            stack.enter_context(target.connection)
        for step in range(n * (WARMUP_RUNS + SERVER_RUNS)):
            target, i = targets[step % n], step // n
            elapsed, response = timed(target.connection, target.run_request)
            if i < WARMUP_RUNS:
                continue
            target.failures += not is_ok(response, TRIVIAL_STDOUT)
            target.server_ms.append(elapsed)
            last_of_turn = step % n == n - 1
            if last_of_turn and (i - WARMUP_RUNS) % baseline_every == 0 and len(baseline_ms) < BASELINE_RUNS:
                baseline_ms.append(_fresh_interpreter_ms(ctx.python))
            if (i - WARMUP_RUNS) % health_every == 1 and len(target.health_ms) < HEALTH_REQUESTS:
                elapsed, response = timed(target.connection, target.health_request)
                if response.status != 200:
                    raise RuntimeError(f"GET /health answered {response.status}")
                target.health_ms.append(elapsed)
    for target in targets:
        target.cpu_seconds = target.server.cpu_seconds() - target.cpu_seconds
    own_cpu = own_seconds() - own_start
    window.close()
    background = window.background_cores(sum(t.cpu_seconds for t in targets) + own_cpu)

    baseline_p50 = percentile(baseline_ms, 50)
    results = []
    for target in targets:
        result = ScenarioResult("P3", title)
        p50 = percentile(target.server_ms, 50)
        speedup = baseline_p50 / p50
        result.add("server p50", p50, "ms", f"<= {target_p50:g}", p50 <= target_p50)
        result.add("server p90", percentile(target.server_ms, 90), "ms")
        result.add("server p99", percentile(target.server_ms, 99), "ms")
        result.add("HTTP floor p50 (GET /health)", percentile(target.health_ms, 50), "ms")
        result.add("fresh interpreter p50", baseline_p50, "ms")
        result.add("speed-up (baseline/server p50)", speedup, "x", f">= {TARGET_SPEEDUP:g}", speedup >= TARGET_SPEEDUP)
        result.add("failed runs", target.failures, target="= 0", ok=target.failures == 0)
        result.add("background load", background, "cores")
        result.details = {
            "server_ms": target.server_ms,
            "baseline_ms": baseline_ms,
            "health_ms": target.health_ms,
            "server_cpu_seconds": target.cpu_seconds,
            "bench_cpu_seconds": own_cpu,
            "interleaved_servers": n,
        }
        results.append(result)
    return results


def run(ctx: BenchContext) -> ScenarioResult:
    return measure(ctx, [ctx.require_server()])[0]


SCENARIO = Scenario("P3", "latency", needs_server=True, run=run, per_executor=True, interleaved=measure)
