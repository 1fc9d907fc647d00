"""Command line: pick scenarios and executors, run each executor's server in turn, print the table, write JSON.

Targets are absolute, but the figures that matter are the ratios measured in the same run (P1 against its
executor's reference, P3 and N1 against a fresh interpreter), because the reference machine is shared and noisy.
One server runs at a time: per executor of ``--executors``, its reference first, then its server and the
scenarios measured per executor; the scenarios measured once (P2, N1, N2) run against the first executor's server.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.context import BenchContext, Scenario
from bench.report import RESULTS_DIR, ScenarioResult, render_table, write_json
from bench.scenarios import SCENARIOS
from bench.server import Server, ServerStartError
from bench.wrk import WrkError, ensure_wrk

REPO_ROOT = Path(__file__).resolve().parent.parent
EXECUTORS = ("fork", "thread")


def env_item(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def executor_list(text: str) -> list[str]:
    names = list(dict.fromkeys(name.strip().lower() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in EXECUTORS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected a comma list of {', '.join(EXECUTORS)}, got {text!r}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = ",".join(s.name for s in SCENARIOS)
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of P1 and of the ceiling (default 15)")
    parser.add_argument("--only", default="", help=f"comma list of scenarios to run (default all: {names})")
    parser.add_argument(
        "--executors",
        "--executor",
        type=executor_list,
        default=list(EXECUTORS),
        metavar="LIST",
        help="SANDBOX_EXECUTOR of each server, in turn (default fork,thread)",
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
    """What runs for one executor: references without a server, then its server and the scenarios against it."""

    executor: str
    references: list[Scenario] = field(default_factory=list)
    on_server: list[Scenario] = field(default_factory=list)


def plan(scenarios: list[Scenario], executors: list[str], explicit: bool) -> list[Phase]:
    """One phase per executor. A reference whose executor is not measured runs first when named in ``--only``,
    and is skipped otherwise (it would form no ratio)."""
    phases = [Phase(executor) for executor in executors]
    for scenario in scenarios:
        if scenario.needs_server:
            for phase in phases if scenario.per_executor else phases[:1]:
                phase.on_server.append(scenario)
        elif scenario.reference_for in executors:
            phases[executors.index(scenario.reference_for)].references.append(scenario)
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
        "server_env": dict(args.server_env),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
    }


def run_one(scenario: Scenario, ctx: BenchContext) -> ScenarioResult:
    where = f" [{ctx.executor}]" if ctx.server is not None else ""
    print(f"running {scenario.name}{where}: {scenario.title} ...", flush=True)
    started = time.perf_counter()
    try:
        result = scenario.run(ctx)
    except Exception as exc:  # one broken scenario must not lose the figures of the others
        result = ScenarioResult(scenario.name, scenario.title, error=f"{type(exc).__name__}: {exc}")
        result.details["traceback"] = traceback.format_exc()
    if scenario.per_executor:
        result.executor = ctx.executor
    if scenario.needs_server:
        result.details["server_executor"] = ctx.executor
    result.details["scenario_seconds"] = time.perf_counter() - started
    return result


def run_phase(phase: Phase, args: argparse.Namespace, stamp: str, meta: dict[str, Any]) -> list[ScenarioResult]:
    """The phase's references, then its server: started, used by its scenarios, stopped before the next phase."""
    python = sys.executable
    ctx = BenchContext(duration=args.duration, python=python, server=None, executor=phase.executor, stamp=stamp)
    results = [run_one(scenario, ctx) for scenario in phase.references]
    if not phase.on_server:
        return results
    env = {**dict(args.server_env), "SANDBOX_EXECUTOR": phase.executor}
    server = Server(python, RESULTS_DIR / f"{stamp}-server-{phase.executor}.log", env)
    print(f"starting the {phase.executor} server on port {server.port} (log: {server.log_path})", flush=True)
    try:
        server.start()
    except ServerStartError as exc:
        meta.setdefault("server_start_failures", {})[phase.executor] = str(exc)
        print(f"the {phase.executor} server did not start: {exc}", file=sys.stderr)
        server.stop()
        error = f"ServerStartError: the {phase.executor} server did not start"
        return results + [
            ScenarioResult(s.name, s.title, error=error, executor=phase.executor if s.per_executor else None)
            for s in phase.on_server
        ]
    try:
        ctx = BenchContext(args.duration, python, server, executor=phase.executor, stamp=stamp)
        for scenario in phase.on_server:
            if (status := server.exit_status()) is not None:
                gone = f"the {phase.executor} server had exited with status {status} (see {server.log_path})"
                tag = phase.executor if scenario.per_executor else None
                results.append(ScenarioResult(scenario.name, scenario.title, error=gone, executor=tag))
                continue
            # Each scenario starts on an idle server, not beside the runs the previous one left in flight.
            waited = server.wait_idle()
            result = run_one(scenario, ctx)
            result.details["waited_for_idle_seconds"] = waited
            if (status := server.exit_status()) is not None:
                # Its figures would describe a server that stopped (or was signalled by another job) mid-way.
                result.error = result.error or (
                    f"the {phase.executor} server exited during this scenario with status {status} "
                    f"(see {server.log_path})"
                )
            results.append(result)
    finally:
        meta.setdefault("server_exit_status", {})[phase.executor] = server.stop()
    return results


def reference_ratios(results: list[ScenarioResult]) -> list[ScenarioResult]:
    """P1 of each executor against its reference: runs/s and CPU per run, both as ratios."""
    by_key = {r.key: r for r in results}
    ratios = []
    for scenario in SCENARIOS:
        executor = scenario.reference_for
        reference, p1 = by_key.get(scenario.name), by_key.get(f"P1[{executor}]")
        if executor is None or reference is None or p1 is None or reference.error or p1.error:
            continue
        p1_rate, reference_rate = p1.value("runs/s"), reference.value("runs/s")
        if not isinstance(p1_rate, float) or not isinstance(reference_rate, float):
            continue
        ratio = ScenarioResult(
            f"P1[{executor}]/{scenario.name}", f"{executor} throughput as a share of the {scenario.title}"
        )
        ratio.add("runs/s ratio", p1_rate / reference_rate, "x")
        p1_cpu = p1.value("server CPU per run")
        reference_cpu = reference.value("CPU per run") or reference.value("server CPU per run")
        if isinstance(p1_cpu, float) and isinstance(reference_cpu, float):
            ratio.add("CPU per run ratio", p1_cpu / reference_cpu, "x")
        ratios.append(ratio)
    return ratios


def table_order(results: list[ScenarioResult]) -> list[ScenarioResult]:
    """Scenarios in declaration order (executors side by side), then anything else (the ratios) as run."""
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
    for phase in plan(scenarios, args.executors, explicit=bool(args.only)):
        results += run_phase(phase, args, stamp, meta)
    meta["wrk"] = wrk_version()
    meta["loadavg_at_end"] = os.getloadavg()
    results = table_order(results) + reference_ratios(results)

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
