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
    executor: str | None = None  # set when the scenario runs once per executor
    isolation: str | None = None  # with ``executor``: the server's SANDBOX_ISOLATION, when ``--isolations`` set it

    @property
    def variant(self) -> str | None:
        """The column this result goes in: ``fork``, or ``fork/off`` when the isolation was set."""
        return server_label(self.executor, self.isolation) if self.executor else None

    @property
    def key(self) -> str:
        """Unique within a run: ``P1[fork]`` and ``P1[thread]`` (or ``P1[fork/off]``) side by side, plain ``P2``
        when run once."""
        return f"{self.name}[{self.variant}]" if self.variant else self.name

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


def server_label(executor: str, isolation: str | None) -> str:
    """What tells a server of the run from the others: its executor, and its isolation when one was set."""
    return f"{executor}/{isolation}" if isolation else executor


def _verdict(ok: bool | None) -> str:
    return {True: "PASS", False: "MISS", None: ""}[ok]


def _align(rows: list[list[str]], widths: list[int]) -> list[str]:
    return ["    " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _widths(rows: list[list[str]], first: int) -> list[int]:
    widths = [max([len(row[i]) for row in rows], default=0) for i in range(len(rows[0]))] if rows else [0]
    widths[0] = max(widths[0], first)
    return widths


def _cells(metric: Metric | None) -> list[str]:
    if metric is None:
        return ["-", "", ""]
    return [metric.formatted(), metric.target or "", _verdict(metric.ok)]


def _block(group: list[ScenarioResult], name_width: int) -> list[str]:
    """A heading line, errors, then one row per metric with (value, target, verdict) per result of the group."""
    first = group[0]
    per_executor = len(group) > 1 or first.variant is not None
    if per_executor:
        verdicts = ", ".join(f"{r.variant} {_verdict(r.passed)}".rstrip() for r in group)
        lines = [f"{first.name}: {first.title}  [{verdicts}]"]
    else:
        verdict = _verdict(first.passed)
        executor, isolation = first.details.get("server_executor"), first.details.get("server_isolation")
        server = f" ({server_label(executor, isolation)} server)" if executor else ""
        lines = [f"{first.name}: {first.title}{server}" + (f"  [{verdict}]" if verdict else "")]
    for result in group:
        if result.error is not None:
            where = f" [{result.variant}]" if per_executor else ""
            lines.append(f"    ERROR{where} {result.error.splitlines()[0][:200]}")
    names = list(dict.fromkeys(m.name for r in group for m in r.metrics))
    rows = [
        [name] + [c for r in group for c in _cells(next((m for m in r.metrics if m.name == name), None))]
        for name in names
    ]
    if per_executor:
        rows.insert(0, [""] + [c for r in group for c in (str(r.variant), "", "")])
    return lines + (_align(rows, _widths(rows, name_width)) if rows else [])


def render_table(results: list[ScenarioResult]) -> str:
    """A plain-text table, one block per scenario name in the order of ``results``. A scenario measured once per
    executor (and isolation) gets one column group (value, target, verdict) per server, side by side."""
    groups: dict[str, list[ScenarioResult]] = {}
    for result in results:
        groups.setdefault(result.name, []).append(result)
    name_width = max([len(m.name) for r in results for m in r.metrics], default=0)
    return "\n".join(line for group in groups.values() for line in _block(group, name_width))


def write_json(path: Path, meta: dict[str, Any], results: list[ScenarioResult]) -> None:
    """Write the whole run: environment, then every scenario with its metrics and details."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "meta": meta,
        "scenarios": {result.key: {**asdict(result), "passed": result.passed} for result in results},
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
