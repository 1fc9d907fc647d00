"""Command line: pick scenarios and executors, run each executor's server in turn, print the table, write JSON.

Targets are absolute, but the figures that matter are the ratios measured in the same run (P1 against its
executor's reference, P3 and N1 against a fresh interpreter), because the reference machine is shared and noisy.
Per executor of ``--executors``, one after the other: its reference first, then its server and the scenarios
measured per executor; the scenarios measured once (P2, N1, N2) run against the first executor's server. A
scenario that needs neither a server nor is a reference (``layers``) runs first of all.

With ``--isolations``, each executor gets one server per ``SANDBOX_ISOLATION`` value and the per-executor
scenarios a column per (executor, isolation). With two or more values, an executor's servers all run at once:
P3 alternates its runs between them, and P1 runs ``--p1-rounds`` times per server, one server at a time in
alternating order while the others stay idle, reported as the medians of its rounds.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.context import Scenario
from bench.phases import plan, run_phase
from bench.ratios import isolation_costs, reference_ratios
from bench.report import RESULTS_DIR, ScenarioResult, render_table, write_json
from bench.scenarios import SCENARIOS
from bench.wrk import WrkError, ensure_wrk

REPO_ROOT = Path(__file__).resolve().parent.parent
EXECUTORS = ("fork", "thread")
ISOLATIONS = ("off", "best-effort", "strict")  # the values of SANDBOX_ISOLATION
# P1 rounds per server when servers run side by side: the median of 2 is their mean, which halves the drift.
DEFAULT_P1_ROUNDS = 2


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
    parser.add_argument(
        "--p1-rounds",
        type=int,
        default=None,
        metavar="N",
        help="with two or more --isolations: P1 rounds per server, in alternating order (default 2)",
    )
    args = parser.parse_args(argv)
    if args.p1_rounds is None:
        args.p1_rounds = DEFAULT_P1_ROUNDS if len(args.isolations) > 1 else 1
    elif len(args.isolations) < 2:
        parser.error("--p1-rounds needs --isolations with two or more values")
    elif args.p1_rounds < 1:
        parser.error("--p1-rounds must be at least 1")
    return args


def select(only: str) -> list[Scenario]:
    if not only:
        return list(SCENARIOS)
    by_name = {s.name.lower(): s for s in SCENARIOS}
    wanted = [name.strip().lower() for name in only.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(by_name)}")
    return [s for s in SCENARIOS if s.name.lower() in wanted]


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
        "side_by_side": len(args.isolations) > 1,  # an executor's servers at once: P3 interleaved, P1 in rounds
        "p1_rounds": args.p1_rounds,
        "server_env": dict(args.server_env),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
    }


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
