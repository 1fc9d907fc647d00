"""P1: throughput of Dify's default python3 code node at 200 concurrent connections, driven by wrk.

It runs once per executor. The fork executor pays a process per run and is compared with the bare-fork ceiling;
the thread executor runs the snippet in the server process and is compared with the constant-reply FastAPI app,
hence its much higher target.
"""

from __future__ import annotations

import json

from bench.context import BenchContext, Scenario
from bench.payloads import DIFY_TEMPLATE_CODE, DIFY_TEMPLATE_STDOUT, run_body, stdout_in_response_body
from bench.report import ScenarioResult
from bench.scenarios import wrk_load

CONNECTIONS = 200
TARGET_RUNS_PER_SECOND = {"fork": 500.0, "thread": 8000.0}


def run(ctx: BenchContext) -> ScenarioResult:
    server = ctx.require_server()
    result = ScenarioResult("P1", f"Dify template node, {CONNECTIONS} connections, wrk {ctx.duration:g} s")
    wrk_load.measure(
        result,
        server,
        json.dumps(run_body(DIFY_TEMPLATE_CODE)).encode(),
        stdout_in_response_body(DIFY_TEMPLATE_STDOUT),
        connections=CONNECTIONS,
        seconds=ctx.duration,
        target_runs_per_second=TARGET_RUNS_PER_SECOND.get(ctx.executor or "fork"),
    )
    return result


SCENARIO = Scenario("P1", "throughput", needs_server=True, run=run, needs_wrk=True, per_executor=True)
