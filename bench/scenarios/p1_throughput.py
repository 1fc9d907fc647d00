"""P1: throughput of Dify's default python3 code node at 200 concurrent connections, driven by wrk.

One request is sent first with httpx to check that the response body holds the expected stdout byte for byte
(JSON-escaped), since wrk can only count bodies that lack it.
"""

from __future__ import annotations

import json

import httpx

from bench.context import BenchContext, Scenario
from bench.cpu import MachineWindow, reaped_children_seconds
from bench.payloads import (
    DIFY_TEMPLATE_CODE,
    DIFY_TEMPLATE_STDOUT,
    HEADERS,
    RUN_PATH,
    run_body,
    stdout_in_response_body,
)
from bench.report import ScenarioResult
from bench.wrk import run_wrk

CONNECTIONS = 200
WRK_THREADS = 2
REQUEST_TIMEOUT_SECONDS = 10.0
TARGET_RUNS_PER_SECOND = 500.0


def run(ctx: BenchContext) -> ScenarioResult:
    server = ctx.require_server()
    result = ScenarioResult("P1", f"Dify template node, {CONNECTIONS} connections, wrk {ctx.duration:g} s")
    body = json.dumps(run_body(DIFY_TEMPLATE_CODE)).encode()
    expected = stdout_in_response_body(DIFY_TEMPLATE_STDOUT)

    probe = httpx.post(server.base_url + RUN_PATH, content=body, headers=HEADERS, timeout=REQUEST_TIMEOUT_SECONDS)
    if probe.status_code != 200 or expected not in probe.content:
        result.error = f"probe request: HTTP {probe.status_code}, body lacks {expected!r}: {probe.content[:500]!r}"
        return result

    window, cpu_start, wrk_cpu_start = MachineWindow.open(), server.cpu_seconds(), reaped_children_seconds()
    wrk = run_wrk(
        server.base_url + RUN_PATH,
        body,
        expected,
        HEADERS,
        connections=CONNECTIONS,
        threads=WRK_THREADS,
        seconds=ctx.duration,
        timeout_seconds=REQUEST_TIMEOUT_SECONDS,
    )
    server_cpu, wrk_cpu = server.cpu_seconds() - cpu_start, reaped_children_seconds() - wrk_cpu_start
    window.close()
    stats = wrk.stats

    runs_per_second = wrk.good_responses / wrk.seconds
    result.add(
        "runs/s", runs_per_second, "runs/s", f">= {TARGET_RUNS_PER_SECOND:g}", runs_per_second >= TARGET_RUNS_PER_SECOND
    )
    result.add("errors", wrk.errors, target="= 0", ok=wrk.errors == 0)
    result.add("latency p50", stats["latency_p50_us"] / 1000, "ms")
    result.add("latency p99", stats["latency_p99_us"] / 1000, "ms")
    result.add("server CPU per run", 1000 * server_cpu / max(1, wrk.good_responses), "ms")
    result.add("wrk CPU", wrk_cpu / wrk.seconds, "cores")
    result.add("background load", window.background_cores(server_cpu + wrk_cpu), "cores")
    result.details = {
        **stats,
        "good_responses": wrk.good_responses,
        "socket_errors": wrk.socket_errors,
        "server_cpu_seconds": server_cpu,
        "wrk_cpu_seconds": wrk_cpu,
        "machine_busy_seconds": window.busy,
        "wrk_output": wrk.output,
    }
    if wrk.errors:
        result.add(
            "error breakdown",
            f"non2xx={stats['non2xx']} wrong_body={stats['wrong_body']} "
            f"socket={wrk.socket_errors} timeouts={stats['timeouts']}",
        )
    return result


SCENARIO = Scenario("P1", "throughput", needs_server=True, run=run, needs_wrk=True)
