"""The scenarios, in the order a full run executes them.

The ceiling runs right before P1 so the two figures that form a ratio see the same machine load.
"""

from __future__ import annotations

from bench.context import Scenario
from bench.scenarios import ceiling, p1_throughput, p2_burst, p3_latency

SCENARIOS: tuple[Scenario, ...] = (ceiling.SCENARIO, p1_throughput.SCENARIO, p2_burst.SCENARIO, p3_latency.SCENARIO)

__all__ = ["SCENARIOS"]
