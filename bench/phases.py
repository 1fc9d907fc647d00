"""Phases: an executor's reference scenarios, then its servers and the scenarios measured against them.

A phase has one server, or with ``--isolations`` of two or more values one per value, all running at once: a
per-executor scenario then covers them all, interleaved (P3), in alternating rounds (P1: one server at a time,
the others idle) or once per server. Every result says which server it is of; a scenario whose server did not
start or exited is reported as failed rather than as figures of a dead server.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bench.context import BenchContext, Scenario
from bench.report import RESULTS_DIR, ScenarioResult, server_label
from bench.server import Server, ServerStartError


@dataclass(slots=True)
class Phase:
    """What runs for one executor: references without a server, then its servers and the scenarios against them.

    One server per value of ``isolations``; with two or more, they all run at once (``run_phase``).
    """

    executor: str
    isolations: list[str | None]  # SANDBOX_ISOLATION of each server; None leaves the server's default
    references: list[Scenario] = field(default_factory=list)
    on_server: list[Scenario] = field(default_factory=list)

    def label(self, isolation: str | None) -> str:
        return server_label(self.executor, isolation)


def plan(scenarios: list[Scenario], executors: list[str], isolations: list[str], explicit: bool) -> list[Phase]:
    """One phase per executor. A reference runs before its executor's servers; one whose executor is not
    measured runs first when named in ``--only``, and is skipped otherwise (it would form no ratio). A scenario
    that is neither a reference nor needs a server runs before everything else."""
    settings: list[str | None] = [*isolations] or [None]
    phases = [Phase(executor, list(settings)) for executor in executors]
    standalone = []
    for scenario in scenarios:
        if scenario.needs_server:
            for phase in phases if scenario.per_executor else phases[:1]:
                phase.on_server.append(scenario)
        elif scenario.reference_for is None:
            standalone.append(scenario)
        elif scenario.reference_for in executors:
            next(p for p in phases if p.executor == scenario.reference_for).references.append(scenario)
        elif explicit:
            phases[0].references.insert(0, scenario)
        else:
            print(f"skipping {scenario.name}: the reference for {scenario.reference_for}, not in --executors")
    phases[0].references[:0] = standalone
    return phases


def _annotate(result: ScenarioResult, scenario: Scenario, ctx: BenchContext, seconds: float) -> None:
    """Which server the result is of: its column for per-executor scenarios, its details for all of them."""
    if scenario.per_executor:
        result.executor, result.isolation = ctx.executor, ctx.isolation
    if scenario.needs_server:
        result.details["server_executor"] = ctx.executor
        if ctx.isolation is not None:
            result.details["server_isolation"] = ctx.isolation
    result.details["scenario_seconds"] = seconds


def _label(ctx: BenchContext) -> str:
    return server_label(ctx.executor or "", ctx.isolation)


def _crashed(scenario: Scenario, exc: Exception) -> ScenarioResult:
    result = ScenarioResult(scenario.name, scenario.title, error=f"{type(exc).__name__}: {exc}")
    result.details["traceback"] = traceback.format_exc()
    return result


def run_one(scenario: Scenario, ctx: BenchContext, note: str = "") -> ScenarioResult:
    where = f" [{server_label(ctx.executor, ctx.isolation)}{note}]" if ctx.server is not None and ctx.executor else ""
    print(f"running {scenario.name}{where}: {scenario.title} ...", flush=True)
    started = time.perf_counter()
    try:
        result = scenario.run(ctx)
    except Exception as exc:  # one broken scenario must not lose the figures of the others
        result = _crashed(scenario, exc)
    _annotate(result, scenario, ctx, time.perf_counter() - started)
    return result


def failed(scenario: Scenario, executor: str, isolation: str | None, error: str) -> ScenarioResult:
    """The result of a scenario that could not run on a server, in that server's column."""
    result = ScenarioResult(scenario.name, scenario.title, error=error)
    if scenario.per_executor:
        result.executor, result.isolation = executor, isolation
    return result


def _gone(server: Server, label: str, during: bool = False) -> str | None:
    """Why a scenario has no figures of ``server``: it had exited (``during`` the scenario); None while it runs."""
    if (status := server.exit_status()) is None:
        return None
    what = "exited during this scenario" if during else "had exited"
    return f"the {label} server {what} with status {status} (see {server.log_path})"


def wait_idle(servers: Iterable[Server]) -> float:
    """Waits until every running server of the phase is idle (P1 leaves runs in flight); the seconds waited."""
    return sum(server.wait_idle() for server in servers if server.exit_status() is None)


def start_server(
    phase: Phase, isolation: str | None, args: argparse.Namespace, stamp: str, meta: dict[str, Any]
) -> Server | None:
    """The phase's server for ``isolation``, started and ready; None (recorded in ``meta``) if it did not start."""
    label = phase.label(isolation)
    env = {**dict(args.server_env), "SANDBOX_EXECUTOR": phase.executor}
    if isolation is not None:
        env["SANDBOX_ISOLATION"] = isolation
    server = Server(sys.executable, RESULTS_DIR / f"{stamp}-server-{label.replace('/', '-')}.log", env)
    print(f"starting the {label} server on port {server.port} (log: {server.log_path})", flush=True)
    try:
        server.start()
    except ServerStartError as exc:
        meta.setdefault("server_start_failures", {})[label] = str(exc)
        print(f"the {label} server did not start: {exc}", file=sys.stderr)
        server.stop()
        return None
    return server


def run_on(scenario: Scenario, ctx: BenchContext, servers: Iterable[Server], note: str = "") -> ScenarioResult:
    """``scenario`` against ``ctx.server``, once all of ``servers`` are idle; failed if the server exits."""
    server, label = ctx.require_server(), _label(ctx)
    if gone := _gone(server, label):
        return failed(scenario, ctx.executor or "", ctx.isolation, gone)
    # Each scenario starts on an idle server, not beside the runs the previous one left in flight.
    waited = wait_idle(servers)
    result = run_one(scenario, ctx, note)
    result.details["waited_for_idle_seconds"] = waited
    # Its figures would describe a server that stopped (or was signalled by another job) mid-way.
    result.error = result.error or _gone(server, label, during=True)
    return result


def run_rounds(
    scenario: Scenario, contexts: list[BenchContext], servers: list[Server], rounds: int
) -> list[ScenarioResult]:
    """``rounds`` rounds over the servers of ``contexts``, one at a time in turn, combined per server."""
    assert scenario.combine is not None
    measured: list[list[ScenarioResult]] = [[] for _ in contexts]
    for number in range(1, rounds + 1):
        for ctx, results in zip(contexts, measured, strict=True):
            results.append(run_on(scenario, ctx, servers, f", round {number}/{rounds}"))
    combined = []
    for ctx, results in zip(contexts, measured, strict=True):
        result = scenario.combine(results)
        _annotate(result, scenario, ctx, sum(r.details.get("scenario_seconds", 0.0) for r in results))
        result.details["waited_for_idle_seconds"] = sum(r.details.get("waited_for_idle_seconds", 0.0) for r in results)
        combined.append(result)
    return combined


def run_interleaved(scenario: Scenario, contexts: list[BenchContext], servers: list[Server]) -> list[ScenarioResult]:
    """One measurement of all the servers of ``contexts`` at once (``scenario.interleaved``), a result each."""
    assert scenario.interleaved is not None
    results: dict[str, ScenarioResult] = {}
    for ctx in contexts:
        if gone := _gone(ctx.require_server(), _label(ctx)):
            results[_label(ctx)] = failed(scenario, ctx.executor or "", ctx.isolation, gone)
    live = [ctx for ctx in contexts if _label(ctx) not in results]
    if live:
        waited = wait_idle(servers)
        names = ", ".join(_label(ctx) for ctx in live)
        print(f"running {scenario.name} [{names}, interleaved]: {scenario.title} ...", flush=True)
        started = time.perf_counter()
        try:
            measured = scenario.interleaved(live[0], [ctx.require_server() for ctx in live])
        except Exception as exc:  # one broken scenario must not lose the figures of the others
            measured = [_crashed(scenario, exc) for _ in live]
        seconds = time.perf_counter() - started
        for ctx, result in zip(live, measured, strict=True):
            _annotate(result, scenario, ctx, seconds)
            result.details["waited_for_idle_seconds"] = waited
            result.error = result.error or _gone(ctx.require_server(), _label(ctx), during=True)
            results[_label(ctx)] = result
    return [results[_label(ctx)] for ctx in contexts]


def run_phase(phase: Phase, args: argparse.Namespace, stamp: str, meta: dict[str, Any]) -> list[ScenarioResult]:
    """The phase's references, then its servers: started, used by its scenarios, stopped before the next phase.

    With one server per phase, each scenario runs against it in turn. With several (``--isolations`` of two or
    more values), all run at once and a per-executor scenario covers all of them: interleaved when it can be
    (P3), in alternating rounds when it is combined over rounds (P1, one server at a time, the others idle),
    else once per server; a scenario measured once runs against the first server.
    """
    ctx = BenchContext(duration=args.duration, python=sys.executable, server=None, executor=phase.executor, stamp=stamp)
    results = [run_one(scenario, ctx) for scenario in phase.references]
    if not phase.on_server:
        return results
    started: dict[str | None, Server] = {}
    try:
        for isolation in phase.isolations:
            if (server := start_server(phase, isolation, args, stamp, meta)) is not None:
                started[isolation] = server
        servers = list(started.values())
        for scenario in phase.on_server:
            targets = phase.isolations if scenario.per_executor else phase.isolations[:1]
            contexts = [
                BenchContext(args.duration, sys.executable, started[iso], phase.executor, stamp, isolation=iso)
                for iso in targets
                if iso in started
            ]
            if len(contexts) > 1 and scenario.interleaved is not None:
                measured = run_interleaved(scenario, contexts, servers)
            elif len(contexts) > 1 and scenario.combine is not None:
                measured = run_rounds(scenario, contexts, servers, args.p1_rounds)
            else:
                measured = [run_on(scenario, ctx, servers) for ctx in contexts]
            by_isolation = {ctx.isolation: result for ctx, result in zip(contexts, measured, strict=True)}
            for iso in targets:
                error = f"ServerStartError: the {phase.label(iso)} server did not start"
                results.append(by_isolation.get(iso) or failed(scenario, phase.executor, iso, error))
    finally:
        for isolation, server in started.items():
            meta.setdefault("server_exit_status", {})[phase.label(isolation)] = server.stop()
    return results
