"""How a run ended, decided once: the API's exit code and ``error``, the metric label, the log reason."""

from __future__ import annotations

import signal

import pytest

from dify_sandbox.executors.base import RunResult
from dify_sandbox.executors.outcome import Cause, RunOutcome


def _result(outcome: RunOutcome, stderr: str = "") -> RunResult:
    return RunResult("", stderr, outcome)


def test_exit_zero_has_empty_error_even_with_stderr() -> None:
    """Warnings on stderr do not fail the node."""
    assert _result(RunOutcome.exited(0), "warning\n").error == ""


def test_nonzero_exit_lists_code_then_stderr() -> None:
    """The exit line comes first, then all of stderr."""
    result = _result(RunOutcome.exited(255), "Traceback\nValueError\n")
    assert result.error == "process exited with code 255\nTraceback\nValueError\n"


@pytest.mark.parametrize(
    ("outcome", "exit_code", "message", "label", "reason"),
    [
        (RunOutcome.exited(0), 0, "", "ok", "exited with code 0"),
        (RunOutcome.exited(3), 3, "", "nonzero_exit", "exited with code 3"),
        (
            RunOutcome.exited(255, "memory"),
            255,
            "error: memory limit exceeded",
            "nonzero_exit",
            "exited with code 255 at the memory limit",
        ),
        (RunOutcome.observed(-1, timed_out=True), -1, "error: timeout", "timeout", "killed at timeout"),
        (
            RunOutcome.observed(-9, output_limited=True),
            -1,
            "error: output limit exceeded",
            "output_limit",
            "killed at the output limit",
        ),
        (
            RunOutcome.observed(-9, disk_limited=True),
            -1,
            "error: disk limit exceeded",
            "nonzero_exit",
            "killed at the disk limit",
        ),
        (
            RunOutcome.observed(-9, at_shutdown=True),
            -1,
            "error: killed at shutdown",
            "killed",
            "killed at shutdown",
        ),
        (RunOutcome.observed(-11), -1, "error: killed by signal SIGSEGV", "killed", "killed by SIGSEGV"),
        (
            RunOutcome.observed(-9),
            -1,
            "error: killed by signal SIGKILL",
            "killed",
            "killed by SIGKILL (likely out of memory)",
        ),
        (
            RunOutcome.observed(-int(signal.SIGXCPU)),
            -1,
            "error: cpu time limit exceeded",
            "killed",
            "killed by SIGXCPU",
        ),
    ],
)
def test_each_ending_gives_one_code_message_label_and_reason(
    outcome: RunOutcome, exit_code: int, message: str, label: str, reason: str
) -> None:
    """Everything that reports a run reads the same outcome, so they cannot disagree."""
    assert (outcome.exit_code, outcome.message, outcome.label, outcome.reason) == (exit_code, message, label, reason)
    lines = [f"process exited with code {exit_code}", message] if message else [f"process exited with code {exit_code}"]
    assert _result(outcome).error == ("\n".join(lines) + "\n" if exit_code or message else "")


def test_our_kills_decide_over_what_the_process_reported() -> None:
    """A run killed at its cap exits with whatever it managed to report; the kill, the earliest first, decides."""
    assert RunOutcome.observed(1, output_limited=True, limit="memory").cause is Cause.OUTPUT_LIMIT
    assert RunOutcome.observed(-9, timed_out=True, at_shutdown=True).cause is Cause.TIMEOUT
    assert RunOutcome.observed(-9, output_limited=True, at_shutdown=True).cause is Cause.OUTPUT_LIMIT
    assert RunOutcome.observed(0, at_shutdown=True).exit_code == -1


def test_kill_at_shutdown_is_named() -> None:
    """A run killed because the shutdown grace ran out says so, not as a signal the OOM killer could have sent."""
    result = _result(RunOutcome.observed(-9, at_shutdown=True))
    assert result.error == "process exited with code -1\nerror: killed at shutdown\n"
