"""P3: sequential latency of a trivial run through the server, next to a fresh interpreter per run.

The baseline is the official model's floor: ``python -I -c code`` started and waited for, with none of the
official service's extra work (prescript, seccomp, chroot), so the ratio understates our advantage. Baseline runs
are interleaved with server runs so both see the same machine noise, and so are ``GET /health`` requests: their
latency is the HTTP floor (client, framework, loopback), so ``server p50 - HTTP floor p50`` is the cost of a run.
The client is a raw keep-alive socket with pre-built requests (``bench/rawhttp.py``): httpx alone would add about
0.4 ms per request, nearly the whole budget of the thread executor.
"""

from __future__ import annotations

import json
import subprocess
import time

from bench.context import BenchContext, Scenario
from bench.cpu import MachineWindow, own_seconds
from bench.payloads import HEADERS, RUN_PATH, TRIVIAL_CODE, TRIVIAL_STDOUT, is_ok_run, run_body
from bench.rawhttp import BlockingConnection, RawResponse, build_request
from bench.report import ScenarioResult
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


def run(ctx: BenchContext) -> ScenarioResult:
    server = ctx.require_server()
    result = ScenarioResult("P3", f"sequential print(1), {SERVER_RUNS} runs vs fresh interpreter")
    target_p50 = TARGET_P50_MS.get(ctx.executor or "fork", TARGET_P50_MS["fork"])
    run_request = build_request(
        "POST", server.host, server.port, RUN_PATH, json.dumps(run_body(TRIVIAL_CODE)).encode(), HEADERS
    )
    health_request = build_request("GET", server.host, server.port, "/health")
    server_ms: list[float] = []
    baseline_ms: list[float] = []
    health_ms: list[float] = []
    failures = 0
    baseline_every, health_every = SERVER_RUNS // BASELINE_RUNS, SERVER_RUNS // HEALTH_REQUESTS
    window, cpu_start, own_start = MachineWindow.open(), server.cpu_seconds(), own_seconds()
    with BlockingConnection(server.host, server.port, REQUEST_TIMEOUT_SECONDS) as connection:
        for i in range(WARMUP_RUNS + SERVER_RUNS):
            elapsed, response = timed(connection, run_request)
            if i < WARMUP_RUNS:
                continue
            failures += not is_ok(response, TRIVIAL_STDOUT)
            server_ms.append(elapsed)
            if (i - WARMUP_RUNS) % baseline_every == 0 and len(baseline_ms) < BASELINE_RUNS:
                baseline_ms.append(_fresh_interpreter_ms(ctx.python))
            if (i - WARMUP_RUNS) % health_every == 1 and len(health_ms) < HEALTH_REQUESTS:
                elapsed, response = timed(connection, health_request)
                if response.status != 200:
                    raise RuntimeError(f"GET /health answered {response.status}")
                health_ms.append(elapsed)
    server_cpu, own_cpu = server.cpu_seconds() - cpu_start, own_seconds() - own_start
    window.close()

    p50 = percentile(server_ms, 50)
    baseline_p50 = percentile(baseline_ms, 50)
    speedup = baseline_p50 / p50
    result.add("server p50", p50, "ms", f"<= {target_p50:g}", p50 <= target_p50)
    result.add("server p90", percentile(server_ms, 90), "ms")
    result.add("server p99", percentile(server_ms, 99), "ms")
    result.add("HTTP floor p50 (GET /health)", percentile(health_ms, 50), "ms")
    result.add("fresh interpreter p50", baseline_p50, "ms")
    result.add("speed-up (baseline/server p50)", speedup, "x", f">= {TARGET_SPEEDUP:g}", speedup >= TARGET_SPEEDUP)
    result.add("failed runs", failures, target="= 0", ok=failures == 0)
    result.add("background load", window.background_cores(server_cpu + own_cpu), "cores")
    result.details = {
        "server_ms": server_ms,
        "baseline_ms": baseline_ms,
        "health_ms": health_ms,
        "server_cpu_seconds": server_cpu,
        "bench_cpu_seconds": own_cpu,
    }
    return result


SCENARIO = Scenario("P3", "latency", needs_server=True, run=run, per_executor=True)
