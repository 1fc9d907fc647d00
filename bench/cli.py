"""Command line: pick scenarios, start the server once if any needs it, run them, print the table, write JSON.

Targets are absolute, but the figures that matter are the ratios measured in the same run (P1 against the bare
fork ceiling, P3 against a fresh interpreter), because the reference machine is shared and noisy.
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
from pathlib import Path
from typing import Any

from bench.context import BenchContext, Scenario
from bench.report import RESULTS_DIR, ScenarioResult, render_table, write_json
from bench.scenarios import SCENARIOS
from bench.server import Server, ServerStartError
from bench.wrk import WrkError, ensure_wrk

REPO_ROOT = Path(__file__).resolve().parent.parent


def env_item(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = ",".join(s.name for s in SCENARIOS)
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of P1 and of the ceiling (default 15)")
    parser.add_argument("--only", default="", help=f"comma list of scenarios to run (default all: {names})")
    parser.add_argument("--executor", choices=["fork", "thread"], help="sets SANDBOX_EXECUTOR for the server")
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


def server_env(args: argparse.Namespace) -> dict[str, str]:
    env: dict[str, str] = dict(args.server_env)
    if args.executor:
        env["SANDBOX_EXECUTOR"] = args.executor
    return env


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


def collect_meta(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git": git_revision(),
        "argv": sys.argv[1:],
        "duration": args.duration,
        "server_env": env,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
    }


def run_one(scenario: Scenario, ctx: BenchContext) -> ScenarioResult:
    print(f"running {scenario.name}: {scenario.title} ...", flush=True)
    started = time.perf_counter()
    try:
        result = scenario.run(ctx)
    except Exception as exc:  # one broken scenario must not lose the figures of the others
        result = ScenarioResult(scenario.name, scenario.title, error=f"{type(exc).__name__}: {exc}")
        result.details["traceback"] = traceback.format_exc()
    result.details["scenario_seconds"] = time.perf_counter() - started
    return result


def p1_versus_ceiling(results: list[ScenarioResult]) -> ScenarioResult | None:
    by_name = {r.name: r for r in results}
    p1, ceiling = by_name.get("P1"), by_name.get("ceiling")
    if p1 is None or ceiling is None or p1.error or ceiling.error:
        return None
    p1_rate, ceiling_rate = p1.value("runs/s"), ceiling.value("runs/s")
    p1_cpu, ceiling_cpu = p1.value("server CPU per run"), ceiling.value("CPU per run")
    if not isinstance(p1_rate, float) or not isinstance(ceiling_rate, float):
        return None
    ratio = ScenarioResult("P1/ceiling", "server throughput as a share of bare fork")
    ratio.add("runs/s ratio", p1_rate / ceiling_rate, "x")
    if isinstance(p1_cpu, float) and isinstance(ceiling_cpu, float):
        ratio.add("CPU per run ratio", p1_cpu / ceiling_cpu, "x")
    return ratio


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = select(args.only)
    env = server_env(args)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    results_path = RESULTS_DIR / f"{stamp}.json"
    meta = collect_meta(args, env)
    python = sys.executable

    if any(s.needs_wrk for s in scenarios):
        try:
            ensure_wrk()
        except WrkError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 2

    server: Server | None = None
    results: list[ScenarioResult] = []
    try:
        if any(s.needs_server for s in scenarios):
            server = Server(python, RESULTS_DIR / f"{stamp}-server.log", env)
            print(f"starting server on port {server.port} (log: {server.log_path})", flush=True)
            try:
                server.start()
            except ServerStartError as exc:
                print(f"the server did not start: {exc}", file=sys.stderr)
                return 2
        ctx = BenchContext(duration=args.duration, python=python, server=server)
        for scenario in scenarios:
            results.append(run_one(scenario, ctx))
    finally:
        if server is not None:
            meta["server_exit_status"] = server.stop()
    meta["wrk"] = wrk_version()
    meta["loadavg_at_end"] = os.getloadavg()
    if ratio := p1_versus_ceiling(results):
        results.append(ratio)

    print()
    print(render_table(results))
    for result in results:
        if result.error and "traceback" in result.details:
            print(f"\n{result.name} failed:\n{result.details['traceback']}", file=sys.stderr)
    write_json(results_path, meta, results)
    print(f"\nresults: {results_path}")
    return 1 if any(r.error for r in results) else 0
