"""N1: sequential latency of ``console.log(1)`` through the server's warm node pool, next to a fresh ``node``.

The baseline starts ``node -e "console.log(1)"`` per run and waits for it: what a runner without a pool pays. It
uses the node the server uses (resolved as the server resolves it: ``NODEJS_PATH``, else ``node`` on PATH, else
the wheel's). A baseline run follows every server run, so both see the same machine noise, and the pool (two
processes per server worker by default) has that much time to start the replacement of the process a run used:
this is a steady sequence of runs, not a back-to-back burst, which would measure node's start-up instead.
"""

from __future__ import annotations

import json
import subprocess
import time

from bench.context import BenchContext, Scenario
from bench.cpu import MachineWindow, own_seconds
from bench.payloads import HEADERS, NODE_TRIVIAL_CODE, NODE_TRIVIAL_STDOUT, RUN_PATH, run_body
from bench.rawhttp import BlockingConnection, build_request
from bench.report import ScenarioResult
from bench.scenarios.p3_latency import is_ok, timed
from bench.stats import percentile
from dify_sandbox.runtimes.nodejs import find_node  # type: ignore[import-untyped]  # the server's own lookup

WARMUP_RUNS = 10
SERVER_RUNS = 100
REQUEST_TIMEOUT_SECONDS = 10.0
TARGET_P50_MS = 15.0
TARGET_SPEEDUP = 3.0


def fresh_node_ms(node: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run([node, "-e", NODE_TRIVIAL_CODE], capture_output=True, check=True)
    elapsed = (time.perf_counter() - start) * 1000
    if proc.stdout.decode() != NODE_TRIVIAL_STDOUT:
        raise RuntimeError(f"fresh node printed {proc.stdout!r}")
    return elapsed


def run(ctx: BenchContext) -> ScenarioResult:
    server = ctx.require_server()
    result = ScenarioResult("N1", f"sequential console.log(1), {SERVER_RUNS} runs vs fresh node")
    node = find_node(server.env.get("NODEJS_PATH"))
    node_path: str = node.path
    request = build_request(
        "POST", server.host, server.port, RUN_PATH, json.dumps(run_body(NODE_TRIVIAL_CODE, "nodejs")).encode(), HEADERS
    )
    server_ms: list[float] = []
    baseline_ms: list[float] = []
    failures = 0
    window, cpu_start, own_start = MachineWindow.open(), server.cpu_seconds(), own_seconds()
    with BlockingConnection(server.host, server.port, REQUEST_TIMEOUT_SECONDS) as connection:
        for i in range(WARMUP_RUNS + SERVER_RUNS):
            elapsed, response = timed(connection, request)
            if i >= WARMUP_RUNS:
                failures += not is_ok(response, NODE_TRIVIAL_STDOUT)
                server_ms.append(elapsed)
            baseline = fresh_node_ms(node_path)
            if i >= WARMUP_RUNS:
                baseline_ms.append(baseline)
    server_cpu, own_cpu = server.cpu_seconds() - cpu_start, own_seconds() - own_start
    window.close()

    p50, baseline_p50 = percentile(server_ms, 50), percentile(baseline_ms, 50)
    speedup = baseline_p50 / p50
    result.add("server p50", p50, "ms", f"<= {TARGET_P50_MS:g}", p50 <= TARGET_P50_MS)
    result.add("server p90", percentile(server_ms, 90), "ms")
    result.add("server p99", percentile(server_ms, 99), "ms")
    result.add("fresh node p50", baseline_p50, "ms")
    result.add("fresh node p90", percentile(baseline_ms, 90), "ms")
    result.add("fresh node p99", percentile(baseline_ms, 99), "ms")
    result.add("speed-up (fresh/server p50)", speedup, "x", f">= {TARGET_SPEEDUP:g}", speedup >= TARGET_SPEEDUP)
    result.add("failed runs", failures, target="= 0", ok=failures == 0)
    result.add("background load", window.background_cores(server_cpu + own_cpu), "cores")
    result.details = {
        "node": {"path": node_path, "version": str(node.version), "source": str(node.source)},
        "server_ms": server_ms,
        "baseline_ms": baseline_ms,
        "server_cpu_seconds": server_cpu,
        "bench_cpu_seconds": own_cpu,
    }
    return result


SCENARIO = Scenario("N1", "Node.js latency", needs_server=True, run=run)
