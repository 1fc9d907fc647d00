"""When the supervisor syncs again: ``python_deps_update_interval`` (a Go duration), and backoff after a failure."""

from __future__ import annotations

import re

__all__ = ["DEFAULT_INTERVAL", "next_delay", "parse_go_duration"]

DEFAULT_INTERVAL = 30 * 60.0  # the official service's `30m`
FIRST_RETRY = 15.0  # a failed sync is retried after this, doubling up to the interval
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_go_duration(text: str | None) -> float:
    """Seconds in ``30m``, ``1h30m``, ``90s`` or a bare number of seconds; the default for empty or unparsable text."""
    if text is None or not text.strip():
        return DEFAULT_INTERVAL
    value = text.strip()
    try:
        return float(value)
    except ValueError:
        pass
    parts = _GO_PART.findall(value)
    if not parts or "".join(number + unit for number, unit in parts) != value:
        return DEFAULT_INTERVAL
    return float(sum(float(number) * _GO_UNITS[unit] for number, unit in parts))


def next_delay(interval: float, failures: int) -> float:
    """Seconds until the next sync: the interval after a success, a doubling backoff after failures."""
    if failures <= 0:
        return interval
    backoff: float = FIRST_RETRY * 2.0 ** (failures - 1)
    return min(interval, backoff)
