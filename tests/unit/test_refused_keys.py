"""Refused keys are logged at most once per client address per interval, with the count held back."""

from __future__ import annotations

from dify_sandbox.api.refused_keys import RefusedKeyLog


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_address_per_interval_counting_the_rest() -> None:
    """Within the interval only the first refusal logs; the next line after it reports how many were held back."""
    clock = Clock()
    log = RefusedKeyLog(interval=60.0, clock=clock)
    assert log.refused("10.0.0.1", "wrong") == 0
    assert log.refused("10.0.0.1", "wrong") is None
    assert log.refused("10.0.0.1", "missing") is None
    assert log.refused("10.0.0.2", "wrong") == 0
    clock.now += 59.0
    assert log.refused("10.0.0.1", "wrong") is None
    clock.now += 1.0
    assert log.refused("10.0.0.1", "wrong") == 3
    assert log.refused("10.0.0.1", "wrong") is None
    clock.now += 60.0
    assert log.refused("10.0.0.1", "wrong") == 1
