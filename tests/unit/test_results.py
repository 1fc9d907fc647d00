"""The official ``error`` text built from a run's outcome."""

from __future__ import annotations

from dify_sandbox.executors.base import RunResult


def test_exit_zero_has_empty_error_even_with_stderr() -> None:
    """Warnings on stderr do not fail the node."""
    assert RunResult(stdout="", stderr="warning\n", exit_code=0).error == ""


def test_nonzero_exit_lists_code_then_stderr() -> None:
    """The exit line comes first, then all of stderr."""
    result = RunResult(stdout="", stderr="Traceback\nValueError\n", exit_code=255)
    assert result.error == "process exited with code 255\nTraceback\nValueError\n"


def test_timeout_adds_the_sandbox_message() -> None:
    """A timeout says so between the exit line and stderr."""
    result = RunResult(stdout="partial", stderr="", exit_code=-1, timed_out=True)
    assert result.error == "process exited with code -1\nerror: timeout\n"


def test_signal_and_output_limit_are_named() -> None:
    """A death by signal names the signal; the output cap names itself."""
    assert "error: killed by signal SIGSEGV" in RunResult("", "", -1, signal=11).error
    assert "error: output limit exceeded" in RunResult("", "", -1, output_limited=True).error


def test_kill_at_shutdown_is_named() -> None:
    """A run killed because the shutdown grace ran out says so, not as a signal the OOM killer could have sent."""
    result = RunResult(stdout="", stderr="", exit_code=-1, killed_at_shutdown=True)
    assert result.error == "process exited with code -1\nerror: killed at shutdown\n"
