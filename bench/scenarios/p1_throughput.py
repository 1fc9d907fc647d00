"""P1: throughput of Dify's default python3 code node at 200 concurrent connections, driven by wrk.

It runs once per executor. The fork executor pays a process per run and is compared with the bare-fork ceiling;
the thread executor runs the snippet in the server process and is compared with the constant-reply FastAPI app,
hence its much higher target.

With ``--isolations`` naming two or more values it runs in rounds (``--p1-rounds``), one server at a time in
alternating order, and each server's figures are the medians of its rounds (see :func:`combine`).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict

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


def combine(rounds: list[ScenarioResult]) -> ScenarioResult:
    """One server's rounds as one result: the median of each figure over the rounds that ran, errors summed.

    A failed round fails the result (so no cost is formed from it); its error is the first round's error.
    """
    first = rounds[0]
    result = ScenarioResult("P1", f"{first.title}, median of {len(rounds)} rounds", executor=first.executor)
    result.isolation = first.isolation
    result.error = next((f"round {i}: {r.error}" for i, r in enumerate(rounds, 1) if r.error), None)
    measured = [r for r in rounds if r.error is None]
    names = list(dict.fromkeys(m.name for r in measured for m in r.metrics))
    for name in names:
        metrics = [m for r in measured for m in r.metrics if m.name == name]
        values = [m.value for m in metrics if isinstance(m.value, int | float)]
        if name == "errors":
            total = int(sum(values))
            result.add(name, total, target="= 0", ok=total == 0)
        elif name == "runs/s":
            value = statistics.median(values)
            target = TARGET_RUNS_PER_SECOND.get(first.executor or "fork")
            ok = None if target is None else value >= target
            result.add(name, value, "runs/s", None if target is None else f">= {target:g}", ok)
        elif values:
            result.add(name, statistics.median(values), metrics[0].unit)
        else:  # text, such as the error breakdown: one per round
            result.add(name, "; ".join(str(m.value) for m in metrics))
    rates = [f"{rate:.0f}" if isinstance(rate := r.value("runs/s"), float) else "-" for r in rounds]
    result.add("runs/s of each round", ", ".join(rates))
    result.details = {
        "rounds": [{"metrics": [asdict(m) for m in r.metrics], "details": r.details, "error": r.error} for r in rounds],
    }
    return result


SCENARIO = Scenario("P1", "throughput", needs_server=True, run=run, needs_wrk=True, per_executor=True, combine=combine)
