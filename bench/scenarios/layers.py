"""layers: the cost of each confinement layer in a fork child, without a server (see ``bench/isolation_layers.py``).

It needs no server and is no executor's reference, so it runs once, before any server starts.
"""

from __future__ import annotations

from bench.context import Scenario
from bench.isolation_layers import run

SCENARIO = Scenario("layers", "isolation layers", needs_server=False, run=run)
