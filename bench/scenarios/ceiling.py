"""Ceiling: bare fork-per-run throughput of the P1 snippet, the figure P1 is compared against.

Two driver processes (one per core of the reference machine) fork and reap as fast as they can for the P1
duration; see ``fork_driver.py``.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from bench.context import BenchContext, Scenario
from bench.cpu import MachineWindow
from bench.payloads import DIFY_TEMPLATE_CODE, DIFY_TEMPLATE_STDOUT
from bench.report import ScenarioResult

DRIVERS = 2
DRIVER_SCRIPT = Path(__file__).resolve().parent / "fork_driver.py"
START_DELAY_SECONDS = 1.5  # time for both drivers to import httpx before the common start


def run(ctx: BenchContext) -> ScenarioResult:
    result = ScenarioResult("ceiling", f"bare fork+exec of the P1 snippet, {DRIVERS} drivers, no HTTP")
    config = json.dumps(
        {
            "code": DIFY_TEMPLATE_CODE,
            "expected_stdout": DIFY_TEMPLATE_STDOUT,
            "seconds": ctx.duration,
            "start_at": time.time() + START_DELAY_SECONDS,
        }
    )
    drivers = [
        subprocess.Popen(
            [ctx.python, str(DRIVER_SCRIPT), config],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(DRIVERS)
    ]
    reports = []
    try:
        time.sleep(max(0.0, START_DELAY_SECONDS - 0.1))
        window = MachineWindow.open()
        for driver in drivers:
            out, err = driver.communicate(timeout=ctx.duration + 60)
            if driver.returncode != 0:
                raise RuntimeError(f"fork driver exited with {driver.returncode}: {err.decode(errors='replace')}")
            reports.append(json.loads(out))
        window.close()
    finally:
        for driver in drivers:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
    runs = sum(r["runs"] for r in reports)
    wrong = sum(r["wrong"] for r in reports)
    runs_per_second = sum(r["runs"] / r["seconds"] for r in reports)
    result.add("runs/s", runs_per_second, "runs/s")
    result.add("CPU per run", 1000 * sum(r["cpu_seconds"] for r in reports) / runs, "ms")
    result.add("wrong outputs", wrong, target="= 0", ok=wrong == 0)
    # The window also holds the drivers' exit, a fraction of a second of idle machine: a slight underestimate.
    result.add("background load", window.background_cores(sum(r["cpu_seconds"] for r in reports)), "cores")
    result.details = {"drivers": reports, "runs": runs}
    return result


SCENARIO = Scenario("ceiling", "bare fork ceiling", needs_server=False, run=run, reference_for="fork")
