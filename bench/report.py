"""Scenario results: the printed table and the JSON file in ``bench/results/``.

Every figure is a ``Metric`` so the table and the JSON come from the same values; raw numbers that do not belong
in the table go to ``details`` (JSON only).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(slots=True)
class Metric:
    """One figure of a scenario, with its target when it has one."""

    name: str
    value: float | int | str | None
    unit: str = ""
    target: str | None = None
    ok: bool | None = None

    def formatted(self) -> str:
        if self.value is None:
            return "-"
        if isinstance(self.value, float):
            text = f"{self.value:.2f}" if abs(self.value) < 100 else f"{self.value:.0f}"
        else:
            text = str(self.value)
        return f"{text} {self.unit}".rstrip()


@dataclass(slots=True)
class ScenarioResult:
    """What one scenario measured; ``error`` is set when it could not run to the end."""

    name: str
    title: str
    metrics: list[Metric] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def add(self, *args: Any, **kwargs: Any) -> Metric:
        metric = Metric(*args, **kwargs)
        self.metrics.append(metric)
        return metric

    def value(self, name: str) -> float | int | str | None:
        return next((m.value for m in self.metrics if m.name == name), None)

    @property
    def passed(self) -> bool | None:
        """False if any target was missed or the scenario failed, None when it has no target."""
        if self.error is not None:
            return False
        verdicts = [m.ok for m in self.metrics if m.ok is not None]
        return all(verdicts) if verdicts else None


def _verdict(ok: bool | None) -> str:
    return {True: "PASS", False: "MISS", None: ""}[ok]


def render_table(results: list[ScenarioResult]) -> str:
    """A plain-text table: a heading line per scenario, then one row per metric."""
    rows = [
        (metric.name, metric.formatted(), metric.target or "", _verdict(metric.ok))
        for result in results
        for metric in result.metrics
    ]
    widths = [max([len(row[i]) for row in rows], default=0) for i in range(4)]
    lines: list[str] = []
    for result in results:
        verdict = _verdict(result.passed)
        lines.append(f"{result.name}: {result.title}" + (f"  [{verdict}]" if verdict else ""))
        if result.error is not None:
            lines.append(f"    ERROR {result.error.splitlines()[0][:200]}")
        for metric in result.metrics:
            cells = (metric.name, metric.formatted(), metric.target or "", _verdict(metric.ok))
            lines.append("    " + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    return "\n".join(lines)


def write_json(path: Path, meta: dict[str, Any], results: list[ScenarioResult]) -> None:
    """Write the whole run: environment, then every scenario with its metrics and details."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "meta": meta,
        "scenarios": {result.name: {**asdict(result), "passed": result.passed} for result in results},
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
