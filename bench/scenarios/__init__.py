"""The scenarios, in the order the table lists them; ``bench/cli.py`` decides the order they run in.

Each reference (the bare-fork ceiling for fork, the constant-reply app for thread) runs right before the server
of its executor starts, so the two figures that form a ratio see the same machine load. ``layers`` needs
neither a server nor an executor and runs first.
"""

from __future__ import annotations

from bench.context import Scenario
from bench.scenarios import (
    ceiling,
    constant,
    layers,
    n1_node_latency,
    n2_node_throughput,
    p1_throughput,
    p2_burst,
    p3_latency,
    p8_packages,
)

SCENARIOS: tuple[Scenario, ...] = (
    ceiling.SCENARIO,
    constant.SCENARIO,
    p1_throughput.SCENARIO,
    p2_burst.SCENARIO,
    p3_latency.SCENARIO,
    n1_node_latency.SCENARIO,
    n2_node_throughput.SCENARIO,
    layers.SCENARIO,
    p8_packages.SCENARIO,
)

__all__ = ["SCENARIOS"]
