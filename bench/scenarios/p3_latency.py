"""P3: sequential latency of a trivial run through the server, next to a fresh interpreter per run.

The baseline is the official model's floor: ``python -I -c code`` started and waited for, with none of the
official service's extra work (prescript, seccomp, chroot), so the ratio understates our advantage. Baseline runs
are interleaved with server runs so both see the same machine noise, and so are ``GET /health`` requests: their
latency is the HTTP floor (client, framework, loopback), so ``server p50 - HTTP floor p50`` is the cost of a run.
"""

from __future__ import annotations

import subprocess
import time

import httpx

from bench.context import BenchContext, Scenario
from bench.payloads import HEADERS, RUN_PATH, TRIVIAL_CODE, TRIVIAL_STDOUT, is_ok_run, run_body
from bench.report import ScenarioResult
from bench.stats import percentile

WARMUP_RUNS = 20
SERVER_RUNS = 300
BASELINE_RUNS = 50
HEALTH_REQUESTS = 100
TARGET_P50_MS = 3.0
TARGET_SPEEDUP = 10.0


def _fresh_interpreter_ms(python: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run([python, "-I", "-c", TRIVIAL_CODE], capture_output=True, check=True)
    elapsed = (time.perf_counter() - start) * 1000
    if proc.stdout.decode() != TRIVIAL_STDOUT:
        raise RuntimeError(f"baseline printed {proc.stdout!r}")
    return elapsed


def _is_ok(response: httpx.Response) -> bool:
    try:
        return response.status_code == 200 and is_ok_run(response.json(), TRIVIAL_STDOUT)
    except ValueError:
        return False


def run(ctx: BenchContext) -> ScenarioResult:
    server = ctx.require_server()
    result = ScenarioResult("P3", f"sequential print(1), {SERVER_RUNS} runs vs fresh interpreter")
    body = run_body(TRIVIAL_CODE)
    server_ms: list[float] = []
    baseline_ms: list[float] = []
    health_ms: list[float] = []
    failures = 0
    baseline_every, health_every = SERVER_RUNS // BASELINE_RUNS, SERVER_RUNS // HEALTH_REQUESTS
    with httpx.Client(base_url=server.base_url, headers=HEADERS, timeout=10.0) as client:
        for i in range(WARMUP_RUNS + SERVER_RUNS):
            start = time.perf_counter()
            response = client.post(RUN_PATH, json=body)
            elapsed = (time.perf_counter() - start) * 1000
            if i < WARMUP_RUNS:
                continue
            failures += not _is_ok(response)
            server_ms.append(elapsed)
            if (i - WARMUP_RUNS) % baseline_every == 0 and len(baseline_ms) < BASELINE_RUNS:
                baseline_ms.append(_fresh_interpreter_ms(ctx.python))
            if (i - WARMUP_RUNS) % health_every == 1 and len(health_ms) < HEALTH_REQUESTS:
                start = time.perf_counter()
                client.get("/health").raise_for_status()
                health_ms.append((time.perf_counter() - start) * 1000)

    p50 = percentile(server_ms, 50)
    baseline_p50 = percentile(baseline_ms, 50)
    speedup = baseline_p50 / p50
    result.add("server p50", p50, "ms", f"<= {TARGET_P50_MS:g}", p50 <= TARGET_P50_MS)
    result.add("server p90", percentile(server_ms, 90), "ms")
    result.add("server p99", percentile(server_ms, 99), "ms")
    result.add("HTTP floor p50 (GET /health)", percentile(health_ms, 50), "ms")
    result.add("fresh interpreter p50", baseline_p50, "ms")
    result.add("speed-up (baseline/server p50)", speedup, "x", f">= {TARGET_SPEEDUP:g}", speedup >= TARGET_SPEEDUP)
    result.add("failed runs", failures, target="= 0", ok=failures == 0)
    result.details = {"server_ms": server_ms, "baseline_ms": baseline_ms, "health_ms": health_ms}
    return result


SCENARIO = Scenario("P3", "latency", needs_server=True, run=run)
