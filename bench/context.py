"""What every scenario receives, and the shape of a scenario, so each one stays a small function in its own module."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.report import ScenarioResult
from bench.server import Server


@dataclass(frozen=True, slots=True)
class BenchContext:
    """Options of this run and the server under test (None when no selected scenario needs it)."""

    duration: float
    python: str  # the venv interpreter: the server's, the ceiling drivers' and the fresh-interpreter baseline's
    server: Server | None
    executor: str | None = None  # SANDBOX_EXECUTOR of ``server``
    stamp: str = "bench"  # the run's timestamp, which names its files in bench/results/
    isolation: str | None = None  # SANDBOX_ISOLATION of ``server``; None when left to the server's default

    def require_server(self) -> Server:
        if self.server is None:
            raise RuntimeError("this scenario needs the server, but it was not started")
        return self.server


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named measurement.

    ``needs_server`` scenarios run against the server; with ``per_executor`` they run once per executor of
    ``--executors`` (one server each, one after the other), otherwise once, against the first executor's server.
    A ``reference_for`` scenario needs no server and runs right before the server of that executor starts, so the
    ratio it forms with that executor's P1 sees the same machine load. A scenario with neither runs once, before
    any server starts. ``needs_wrk`` installs wrk before anything is measured.

    With ``--isolations`` naming two or more values, an executor's servers run at once, and a ``per_executor``
    scenario is measured in one of three ways: ``interleaved`` measures all of them in one go and returns one
    result per server (in their order); with ``combine`` it runs ``--p1-rounds`` times per server, one server at a
    time in alternating order, and ``combine`` turns each server's rounds into its result; otherwise it runs once
    per server, one after the other.
    """

    name: str
    title: str
    needs_server: bool
    run: Callable[[BenchContext], ScenarioResult]
    needs_wrk: bool = False
    per_executor: bool = False
    reference_for: str | None = None
    interleaved: Callable[[BenchContext, Sequence[Server]], list[ScenarioResult]] | None = None
    combine: Callable[[list[ScenarioResult]], ScenarioResult] | None = None
