"""What every executor takes and gives: :class:`RunRequest` in, :class:`RunResult` out.

User-code outcomes (exit code, timeout, output limit, signal) are data on the result; only a
failure of the executor itself raises (:class:`~dify_sandbox.errors.ExecutorError`).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["EXIT_KILLED", "Executor", "Language", "RunRequest", "RunResult"]

Language = Literal["python3", "nodejs"]

# The official service reports any death by signal as exit code -1 (Go's ProcessState.ExitCode()).
EXIT_KILLED = -1


@dataclass(frozen=True, slots=True)
class RunRequest:
    """One snippet to run."""

    language: Language
    code: str
    preload: str
    enable_network: bool
    timeout: float


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a run produced and how it ended."""

    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool = False
    output_limited: bool = False
    signal: int | None = None
    duration: float = 0.0
    pid: int | None = None
    limit: str | None = None  # the resource limit the run hit ("memory", "file size", ...)
    killed_at_shutdown: bool = False  # still running when the shutdown grace ran out

    @property
    def signal_name(self) -> str | None:
        """``SIGSEGV`` and the like, when a signal we did not send ended the run."""
        return None if self.signal is None else _signal_name(self.signal)

    @property
    def sandbox_message(self) -> str:
        """The line the sandbox adds to ``error`` to say why it stopped the run, if it did."""
        if self.killed_at_shutdown:
            return "error: killed at shutdown"
        if self.timed_out:
            return "error: timeout"
        if self.output_limited:
            return "error: output limit exceeded"
        if self.limit is not None:
            return f"error: {self.limit} limit exceeded"
        if self.signal == signal.SIGXCPU:
            return "error: cpu time limit exceeded"
        if self.signal_name is not None:
            return f"error: killed by signal {self.signal_name}"
        return ""

    @property
    def error(self) -> str:
        """The official ``error`` field: empty on exit 0, else the exit line, the reason, all of stderr."""
        message = self.sandbox_message
        if self.exit_code == 0 and not message:
            return ""
        lines = [f"process exited with code {self.exit_code}"]
        if message:
            lines.append(message)
        return "\n".join(lines) + "\n" + self.stderr


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


class Executor(Protocol):
    """Runs snippets. ``start`` before the first run, ``close`` after the last."""

    #: True once the executor cannot keep its capacity (stuck threads): the worker drains and is replaced.
    unhealthy: bool

    async def start(self) -> None:
        """Prepares the executor (spawns helper processes, warms caches)."""

    async def run(self, request: RunRequest) -> RunResult:
        """Runs one snippet to completion or to its time limit."""

    async def rewarm(self) -> None:
        """Picks up newly installed packages without dropping in-flight runs."""

    async def kill_all(self) -> None:
        """Ends every in-flight run at once (the shutdown grace has run out)."""

    async def close(self) -> None:
        """Stops helper processes; nothing of the executor outlives this call."""
