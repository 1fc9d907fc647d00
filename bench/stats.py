"""Percentiles of latency samples, interpolated linearly between ranks (numpy's default method)."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(samples: Sequence[float], pct: float) -> float:
    """The ``pct``-th percentile (0-100) of ``samples``."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
