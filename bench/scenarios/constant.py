"""Constant: the thread executor's ceiling, a FastAPI app that returns a fixed JSON (``bench/constant_app.py``).

It is measured exactly as P1 is (same body, body check, connections, wrk threads and duration) right before the
thread executor's server starts, and never while another server runs. P1(thread) ÷ this figure is what the API
layer and the in-process executor cost on top of the bare HTTP stack.
"""

from __future__ import annotations

import json
import os

from bench.context import BenchContext, Scenario
from bench.payloads import (
    DIFY_TEMPLATE_CODE,
    DIFY_TEMPLATE_STDOUT,
    HEADERS,
    RUN_PATH,
    run_body,
    stdout_in_response_body,
)
from bench.report import RESULTS_DIR, ScenarioResult
from bench.scenarios import wrk_load
from bench.scenarios.p1_throughput import CONNECTIONS
from bench.server import Server, ServerStartError


def run(ctx: BenchContext) -> ScenarioResult:
    workers = os.cpu_count() or 1
    result = ScenarioResult(
        "constant", f"constant-reply FastAPI app, {workers} workers, {CONNECTIONS} connections, wrk {ctx.duration:g} s"
    )
    body = json.dumps(run_body(DIFY_TEMPLATE_CODE)).encode()
    app = Server(
        ctx.python,
        RESULTS_DIR / f"{ctx.stamp}-constant.log",
        {"SANDBOX_WORKERS": str(workers)},
        argv=("-m", "bench.constant_app"),
        ready_path=RUN_PATH,
        ready_body=body,
        ready_headers=HEADERS,
    )
    try:
        app.start()
    except ServerStartError as exc:
        result.error = f"the constant app did not start: {exc}"
        return result
    try:
        wrk_load.measure(
            result,
            app,
            body,
            stdout_in_response_body(DIFY_TEMPLATE_STDOUT),
            connections=CONNECTIONS,
            seconds=ctx.duration,
        )
    finally:
        status = app.stop()
    result.details["exit_status"] = status
    return result


SCENARIO = Scenario(
    "constant", "constant-reply FastAPI app", needs_server=False, run=run, needs_wrk=True, reference_for="thread"
)
