"""What every executor takes and gives: :class:`RunRequest` in, :class:`RunResult` out.

How a run ended (exit code, timeout, a limit, a signal) is its :class:`RunOutcome`; only a
failure of the executor itself raises (:class:`~dify_sandbox.errors.ExecutorError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from dify_sandbox.executors.outcome import RunOutcome

__all__ = ["Executor", "Language", "RunRequest", "RunResult"]

Language = Literal["python3", "nodejs"]


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
    outcome: RunOutcome
    duration: float = 0.0
    pid: int | None = None

    @property
    def exit_code(self) -> int:
        """The official ``exit_code``."""
        return self.outcome.exit_code

    @property
    def error(self) -> str:
        """The official ``error`` field: empty on exit 0, else the exit line, the reason, all of stderr."""
        message = self.outcome.message
        if self.exit_code == 0 and not message:
            return ""
        lines = [f"process exited with code {self.exit_code}"]
        if message:
            lines.append(message)
        return "\n".join(lines) + "\n" + self.stderr


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
