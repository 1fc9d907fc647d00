"""Command line: pick scenarios and executors, run each executor's server in turn, print the table, write JSON.

Targets are absolute, but the figures that matter are the ratios measured in the same run (P1 against its
executor's reference, P3 and N1 against a fresh interpreter), because the reference machine is shared and noisy.
One server runs at a time: per executor of ``--executors``, its reference first, then its server and the
scenarios measured per executor; the scenarios measured once (P2, N1, N2) run against the first executor's server.
With ``--isolations``, each executor gets one server per ``SANDBOX_ISOLATION`` value, one after the other, and
the per-executor scenarios get a column per (executor, isolation).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.context import BenchContext, Scenario
from bench.ratios import isolation_costs, reference_ratios
from bench.report import RESULTS_DIR, ScenarioResult, render_table, server_label, write_json
from bench.scenarios import SCENARIOS
from bench.server import Server, ServerStartError
from bench.wrk import WrkError, ensure_wrk

REPO_ROOT = Path(__file__).resolve().parent.parent
EXECUTORS = ("fork", "thread")
ISOLATIONS = ("off", "best-effort", "strict")  # the values of SANDBOX_ISOLATION


def env_item(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def choice_list(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    """An argparse type: a non-empty comma list of ``choices``, duplicates dropped, in the order given."""

    def parse(text: str) -> list[str]:
        names = list(dict.fromkeys(name.strip().lower() for name in text.split(",") if name.strip()))
        if not names or any(name not in choices for name in names):
            raise argparse.ArgumentTypeError(f"expected a comma list of {', '.join(choices)}, got {text!r}")
        return names

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = ",".join(s.name for s in SCENARIOS)
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of P1 and of the ceiling (default 15)")
    parser.add_argument("--only", default="", help=f"comma list of scenarios to run (default all: {names})")
    parser.add_argument(
        "--executors",
        "--executor",
        type=choice_list(EXECUTORS),
        default=list(EXECUTORS),
        metavar="LIST",
        help="SANDBOX_EXECUTOR of each server, in turn (default fork,thread)",
    )
    parser.add_argument(
        "--isolations",
        type=choice_list(ISOLATIONS),
        default=[],
        metavar="LIST",
        help=f"SANDBOX_ISOLATION values ({', '.join(ISOLATIONS)}): one server per executor and value, side by side "
        "(default: one server per executor, with the server's default)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        type=env_item,
        metavar="NAME=VALUE",
        help="extra server environment, repeatable",
    )
    return parser.parse_args(argv)


def select(only: str) -> list[Scenario]:
    if not only:
        return list(SCENARIOS)
    by_name = {s.name.lower(): s for s in SCENARIOS}
    wanted = [name.strip().lower() for name in only.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(by_name)}")
    return [s for s in SCENARIOS if s.name.lower() in wanted]


@dataclass(slots=True)
class Phase:
    """What runs for one server: references without a server, then the server and the scenarios against it."""

    executor: str
    isolation: str | None = None  # SANDBOX_ISOLATION; None leaves the server's default
    references: list[Scenario] = field(default_factory=list)
    on_server: list[Scenario] = field(default_factory=list)

    @property
    def label(self) -> str:
        return server_label(self.executor, self.isolation)


def plan(scenarios: list[Scenario], executors: list[str], isolations: list[str], explicit: bool) -> list[Phase]:
    """One phase per executor, or per executor and isolation. A reference runs before its executor's first
    server; one whose executor is not measured runs first when named in ``--only``, and is skipped otherwise (it
    would form no ratio)."""
    settings: list[str | None] = [*isolations] or [None]
    phases = [Phase(executor, isolation) for executor in executors for isolation in settings]
    for scenario in scenarios:
        if scenario.needs_server:
            for phase in phases if scenario.per_executor else phases[:1]:
                phase.on_server.append(scenario)
        elif scenario.reference_for in executors:
            next(p for p in phases if p.executor == scenario.reference_for).references.append(scenario)
        elif explicit:
            phases[0].references.insert(0, scenario)
        else:
            print(f"skipping {scenario.name}: the reference for {scenario.reference_for}, not in --executors")
    return phases


def git_revision() -> str:
    def git(*command: str) -> str:
        return subprocess.run(["git", *command], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("-dirty" if git("status", "--porcelain", "--", "src") else "")


def wrk_version() -> str | None:
    """wrk prints its version on the first line of its usage text."""
    if shutil.which("wrk") is None:
        return None
    proc = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return (proc.stdout or proc.stderr).split("\n", 1)[0]


def collect_meta(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git": git_revision(),
        "argv": sys.argv[1:],
        "duration": args.duration,
        "executors": args.executors,
        "isolations": args.isolations,
        "server_env": dict(args.server_env),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
    }


def run_one(scenario: Scenario, ctx: BenchContext) -> ScenarioResult:
    where = f" [{server_label(ctx.executor, ctx.isolation)}]" if ctx.server is not None and ctx.executor else ""
    print(f"running {scenario.name}{where}: {scenario.title} ...", flush=True)
    started = time.perf_counter()
    try:
        result = scenario.run(ctx)
    except Exception as exc:  # one broken scenario must not lose the figures of the others
        result = ScenarioResult(scenario.name, scenario.title, error=f"{type(exc).__name__}: {exc}")
        result.details["traceback"] = traceback.format_exc()
    if scenario.per_executor:
        result.executor, result.isolation = ctx.executor, ctx.isolation
    if scenario.needs_server:
        result.details["server_executor"] = ctx.executor
        if ctx.isolation is not None:
            result.details["server_isolation"] = ctx.isolation
    result.details["scenario_seconds"] = time.perf_counter() - started
    return result


def failed(scenario: Scenario, phase: Phase, error: str) -> ScenarioResult:
    """The result of a scenario that could not run on the phase's server, in that server's column."""
    executor, isolation = (phase.executor, phase.isolation) if scenario.per_executor else (None, None)
    return ScenarioResult(scenario.name, scenario.title, error=error, executor=executor, isolation=isolation)


def run_phase(phase: Phase, args: argparse.Namespace, stamp: str, meta: dict[str, Any]) -> list[ScenarioResult]:
    """The phase's references, then its server: started, used by its scenarios, stopped before the next phase."""
    python, label = sys.executable, phase.label
    ctx = BenchContext(duration=args.duration, python=python, server=None, executor=phase.executor, stamp=stamp)
    results = [run_one(scenario, ctx) for scenario in phase.references]
    if not phase.on_server:
        return results
    env = {**dict(args.server_env), "SANDBOX_EXECUTOR": phase.executor}
    if phase.isolation is not None:
        env["SANDBOX_ISOLATION"] = phase.isolation
    server = Server(python, RESULTS_DIR / f"{stamp}-server-{label.replace('/', '-')}.log", env)
    print(f"starting the {label} server on port {server.port} (log: {server.log_path})", flush=True)
    try:
        server.start()
    except ServerStartError as exc:
        meta.setdefault("server_start_failures", {})[label] = str(exc)
        print(f"the {label} server did not start: {exc}", file=sys.stderr)
        server.stop()
        error = f"ServerStartError: the {label} server did not start"
        return results + [failed(s, phase, error) for s in phase.on_server]
    try:
        ctx = BenchContext(args.duration, python, server, phase.executor, stamp, isolation=phase.isolation)
        for scenario in phase.on_server:
            if (status := server.exit_status()) is not None:
                gone = f"the {label} server had exited with status {status} (see {server.log_path})"
                results.append(failed(scenario, phase, gone))
                continue
            # Each scenario starts on an idle server, not beside the runs the previous one left in flight.
            waited = server.wait_idle()
            result = run_one(scenario, ctx)
            result.details["waited_for_idle_seconds"] = waited
            if (status := server.exit_status()) is not None:
                # Its figures would describe a server that stopped (or was signalled by another job) mid-way.
                result.error = result.error or (
                    f"the {label} server exited during this scenario with status {status} (see {server.log_path})"
                )
            results.append(result)
    finally:
        meta.setdefault("server_exit_status", {})[label] = server.stop()
    return results


def table_order(results: list[ScenarioResult]) -> list[ScenarioResult]:
    """Scenarios in declaration order (servers side by side), then anything else as run."""
    rank = {s.name: i for i, s in enumerate(SCENARIOS)}
    return sorted(results, key=lambda r: rank.get(r.name, len(rank)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = select(args.only)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    results_path = RESULTS_DIR / f"{stamp}.json"
    meta = collect_meta(args)

    if any(s.needs_wrk for s in scenarios):
        try:
            ensure_wrk()
        except WrkError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 2

    results: list[ScenarioResult] = []
    for phase in plan(scenarios, args.executors, args.isolations, explicit=bool(args.only)):
        results += run_phase(phase, args, stamp, meta)
    meta["wrk"] = wrk_version()
    meta["loadavg_at_end"] = os.getloadavg()
    results = table_order(results) + reference_ratios(results, SCENARIOS) + isolation_costs(results, args.isolations)

    print()
    print(render_table(results))
    for result in results:
        if result.error and "traceback" in result.details:
            print(f"\n{result.key} failed:\n{result.details['traceback']}", file=sys.stderr)
    write_json(results_path, meta, results)
    print(f"\nresults: {results_path}")
    if meta.get("server_start_failures"):
        return 2
    return 1 if any(r.error for r in results) else 0
