"""Figures formed from two results of the same run, so both saw the same machine: P1 against its executor's
reference, and each isolation setting's P1 and P3 against the baseline setting's (``--isolations``).

Each comparison is a ``ScenarioResult`` of its own, in the table and the JSON like a scenario. With two or more
isolation settings their servers ran side by side, so the P3 figures are from one interleaved measurement and the
P1 figures are medians over alternating rounds (see ``bench/phases.py``).
"""

from __future__ import annotations

from bench.context import Scenario
from bench.report import ScenarioResult, server_label

BASELINE_ISOLATION = "off"  # what the others are compared with when measured; else the first of --isolations
# The isolation layers' budget (the issue's): at most 5 % fewer runs/s on P1, at most 0.1 ms more on P3.
MIN_P1_RUNS_RATIO = 0.95
MAX_P3_P50_EXTRA_MS = 0.1


def _figure(result: ScenarioResult | None, name: str) -> float | None:
    """The metric as a float, or None when the scenario did not run, failed or lacks it."""
    if result is None or result.error is not None:
        return None
    value = result.value(name)
    return float(value) if isinstance(value, int | float) else None


def reference_ratios(results: list[ScenarioResult], scenarios: tuple[Scenario, ...]) -> list[ScenarioResult]:
    """P1 of each server against its executor's reference: runs/s and CPU per run, both as ratios."""
    by_key = {r.key: r for r in results}
    ratios = []
    for scenario in scenarios:
        reference = by_key.get(scenario.name)
        reference_rate = _figure(reference, "runs/s")
        if scenario.reference_for is None or reference_rate is None:
            continue
        for p1 in results:
            p1_rate = _figure(p1, "runs/s")
            if p1.name != "P1" or p1.executor != scenario.reference_for or p1_rate is None:
                continue
            ratio = ScenarioResult(
                f"{p1.key}/{scenario.name}", f"{p1.variant} throughput as a share of the {scenario.title}"
            )
            ratio.add("runs/s ratio", p1_rate / reference_rate, "x")
            p1_cpu = _figure(p1, "server CPU per run")
            reference_cpu = _figure(reference, "CPU per run") or _figure(reference, "server CPU per run")
            if p1_cpu is not None and reference_cpu is not None:
                ratio.add("CPU per run ratio", p1_cpu / reference_cpu, "x")
            ratios.append(ratio)
    return ratios


def _pair(
    by_key: dict[str, ScenarioResult], scenario: str, metric: str, servers: tuple[str, str]
) -> tuple[float, float] | None:
    """The metric of ``scenario`` on both servers (labels as in ``P1[fork/off]``), or None if either lacks it."""
    first, second = (_figure(by_key.get(f"{scenario}[{server}]"), metric) for server in servers)
    return None if first is None or second is None else (first, second)


def _round_rates(result: ScenarioResult | None) -> list[float | None]:
    """P1 runs/s of each round (``P1`` combined over ``--p1-rounds``); empty when it did not run in rounds."""
    if result is None:
        return []
    rates = []
    for measured in result.details.get("rounds", []):
        value = next((m["value"] for m in measured["metrics"] if m["name"] == "runs/s"), None)
        rates.append(float(value) if isinstance(value, int | float) and measured["error"] is None else None)
    return rates


def _round_ratios(by_key: dict[str, ScenarioResult], servers: tuple[str, str]) -> str | None:
    """Round k of the first server over round k of the second, for each k: how much the ratio moved."""
    first, second = (_round_rates(by_key.get(f"P1[{server}]")) for server in servers)
    if len(first) < 2 or len(first) != len(second):
        return None
    return ", ".join("-" if a is None or not b else f"{a / b:.2f}" for a, b in zip(first, second, strict=True))


def isolation_costs(results: list[ScenarioResult], isolations: list[str]) -> list[ScenarioResult]:
    """Each isolation against the baseline one, per executor: P1 runs/s and CPU per run as ratios, P3 latency as
    differences. The P3 HTTP floor difference is how much the machine itself moved between the two servers (next
    to nothing once P3 is interleaved)."""
    if len(isolations) < 2:
        return []
    baseline = BASELINE_ISOLATION if BASELINE_ISOLATION in isolations else isolations[0]
    by_key = {r.key: r for r in results}
    executors = dict.fromkeys(r.executor for r in results if r.executor is not None and r.isolation is not None)
    costs = []
    for isolation in (i for i in isolations if i != baseline):
        for executor in executors:
            servers = (server_label(executor, isolation), server_label(executor, baseline))
            cost = ScenarioResult(
                f"{isolation}/{baseline}", f"cost of isolation {isolation} over {baseline}", executor=executor
            )
            if p1 := _pair(by_key, "P1", "runs/s", servers):
                ratio = p1[0] / p1[1]
                cost.add("P1 runs/s ratio", ratio, "x", f">= {MIN_P1_RUNS_RATIO:g}", ratio >= MIN_P1_RUNS_RATIO)
            if rounds := _round_ratios(by_key, servers):
                cost.add("P1 runs/s ratio of each round", rounds)
            if cpu := _pair(by_key, "P1", "server CPU per run", servers):
                cost.add("P1 server CPU per run ratio", cpu[0] / cpu[1], "x")
            if p50 := _pair(by_key, "P3", "server p50", servers):
                extra = p50[0] - p50[1]
                cost.add("P3 p50 difference", extra, "ms", f"<= +{MAX_P3_P50_EXTRA_MS:g}", extra <= MAX_P3_P50_EXTRA_MS)
            if p99 := _pair(by_key, "P3", "server p99", servers):
                cost.add("P3 p99 difference", p99[0] - p99[1], "ms")
            if floor := _pair(by_key, "P3", "HTTP floor p50 (GET /health)", servers):
                cost.add("P3 HTTP floor difference", floor[0] - floor[1], "ms")
            if cost.metrics:
                costs.append(cost)
    return costs
