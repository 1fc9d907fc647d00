"""How a run ended: decided once, by the executor that watched it, and read by all that report it.

An executor sees raw facts (an exit status or a signal, which of our limits it enforced, whether
the shutdown grace ran out) and turns them into one :class:`RunOutcome` with
:meth:`RunOutcome.observed`. The API's ``exit_code`` and ``error`` line, the metric label and the
log's reason are all read from that one value, so they always agree.
"""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass
from typing import Literal

__all__ = ["EXIT_KILLED", "Cause", "RunLabel", "RunOutcome"]

# The official service reports any death by signal as exit code -1 (Go's ProcessState.ExitCode()).
EXIT_KILLED = -1

RunLabel = Literal["ok", "nonzero_exit", "timeout", "output_limit", "killed"]


class Cause(enum.Enum):
    """Why the run's process ended."""

    EXITED = "exited"  # by itself, with an exit status
    SIGNALLED = "signalled"  # a signal we did not send (a crash, the kernel's OOM killer, SIGXCPU)
    TIMEOUT = "timeout"  # we killed it at the wall-clock limit
    OUTPUT_LIMIT = "output limit"  # we killed it when its output passed the cap
    DISK_LIMIT = "disk limit"  # we killed it when its dir passed the disk budget
    SHUTDOWN = "shutdown"  # we killed it when the shutdown grace ran out


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """One run's ending: its cause and, for an exit or a signal, the number."""

    cause: Cause
    number: int = 0  # EXITED: the exit status (0-255); SIGNALLED: the signal
    limit: str | None = None  # EXITED: a resource limit the run itself reported ("memory", "file size")

    @classmethod
    def exited(cls, status: int, limit: str | None = None) -> RunOutcome:
        """The process exited by itself with ``status``."""
        return cls(Cause.EXITED, status, limit)

    @classmethod
    def observed(
        cls,
        exit_status: int,
        *,
        timed_out: bool = False,
        output_limited: bool = False,
        disk_limited: bool = False,
        at_shutdown: bool = False,
        limit: str | None = None,
    ) -> RunOutcome:
        """From what an executor saw; ``exit_status`` < 0: ended by that signal (``Popen``'s convention).

        Our own kills decide over whatever the process reported as it died (say, a broken pipe past
        the output cap), the earliest first: a run killed at its timeout may also be caught by the
        shutdown's kill before it is reaped.
        """
        if timed_out:
            return cls(Cause.TIMEOUT)
        if output_limited:
            return cls(Cause.OUTPUT_LIMIT)
        if disk_limited:
            return cls(Cause.DISK_LIMIT)
        if at_shutdown:
            return cls(Cause.SHUTDOWN)
        if exit_status < 0:
            return cls(Cause.SIGNALLED, -exit_status)
        return cls(Cause.EXITED, exit_status, limit)

    @property
    def exit_code(self) -> int:
        """The API's ``exit_code``: the exit status, or -1 for any kill."""
        return self.number if self.cause is Cause.EXITED else EXIT_KILLED

    @property
    def signal_name(self) -> str | None:
        """``SIGSEGV`` and the like, when a signal we did not send ended the run."""
        if self.cause is not Cause.SIGNALLED:
            return None
        try:
            return signal.Signals(self.number).name
        except ValueError:
            return str(self.number)

    @property
    def message(self) -> str:
        """The line the sandbox adds to ``error`` to say why the run stopped, if it was not its own exit."""
        if self.cause is Cause.EXITED:
            return f"error: {self.limit} limit exceeded" if self.limit is not None else ""
        if self.cause is Cause.SIGNALLED:
            if self.number == signal.SIGXCPU:
                return "error: cpu time limit exceeded"
            return f"error: killed by signal {self.signal_name}"
        if self.cause is Cause.TIMEOUT:
            return "error: timeout"
        if self.cause is Cause.SHUTDOWN:
            return "error: killed at shutdown"
        return f"error: {self.cause.value} exceeded"

    @property
    def label(self) -> RunLabel:
        """The bounded metric label."""
        if self.cause is Cause.TIMEOUT:
            return "timeout"
        if self.cause is Cause.OUTPUT_LIMIT:
            return "output_limit"
        if self.cause in (Cause.SIGNALLED, Cause.SHUTDOWN):
            return "killed"
        return "ok" if self.exit_code == 0 else "nonzero_exit"

    @property
    def reason(self) -> str:
        """How the run's process ended, in words for the log."""
        if self.cause is Cause.EXITED:
            suffix = f" at the {self.limit} limit" if self.limit is not None else ""
            return f"exited with code {self.number}{suffix}"
        if self.cause is Cause.SIGNALLED:
            # A SIGKILL we did not send is almost always the kernel's OOM killer.
            suffix = " (likely out of memory)" if self.number == signal.SIGKILL else ""
            return f"killed by {self.signal_name}{suffix}"
        if self.cause is Cause.TIMEOUT:
            return "killed at timeout"
        if self.cause is Cause.SHUTDOWN:
            return "killed at shutdown"
        return f"killed at the {self.cause.value}"
