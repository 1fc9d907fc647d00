"""N2: throughput of Dify's default javascript code node at 50 concurrent connections, driven by wrk for 10 s.

Every run takes a fresh node process (the pool only hides its start-up while it keeps up), so this measures how
fast the server starts, feeds and reaps node processes under load; the body check makes sure each run really
executed the snippet.
"""

from __future__ import annotations

import json

from bench.context import BenchContext, Scenario
from bench.payloads import DIFY_NODE_TEMPLATE_CODE, DIFY_NODE_TEMPLATE_STDOUT, run_body, stdout_in_response_body
from bench.report import ScenarioResult
from bench.scenarios import wrk_load

CONNECTIONS = 50
SECONDS = 10.0


def run(ctx: BenchContext) -> ScenarioResult:
    server = ctx.require_server()
    result = ScenarioResult("N2", f"Dify javascript template node, {CONNECTIONS} connections, wrk {SECONDS:g} s")
    wrk_load.measure(
        result,
        server,
        json.dumps(run_body(DIFY_NODE_TEMPLATE_CODE, "nodejs")).encode(),
        stdout_in_response_body(DIFY_NODE_TEMPLATE_STDOUT),
        connections=CONNECTIONS,
        seconds=SECONDS,
    )
    return result


SCENARIO = Scenario("N2", "Node.js throughput", needs_server=True, run=run, needs_wrk=True)
