"""The worker's view of one fork run, from SPAWN until its output is complete, and what it observed.

A run is complete when the child has ended (its report on the status pipe followed by the pipe's
EOF, or the zygote's wait status) and both output pipes reached EOF. The snippet can write to the
status pipe too, so a report is a hint: only the last record counts, only a plausible one (an exit
status 0-255, a known limit), and it never stops the wall-clock limit, which runs until the zygote
has reaped the child. Our kills (timeout, output cap, disk budget, shutdown) decide over the report.
"""

from __future__ import annotations

import asyncio
import os

from dify_sandbox.errors import ExecutorError
from dify_sandbox.executors._pipes import PipeReader
from dify_sandbox.executors._rlimits import LIMIT_NAMES
from dify_sandbox.executors.base import RunResult
from dify_sandbox.executors.outcome import RunOutcome
from dify_sandbox.executors.zygote.protocol import STATUS

__all__ = ["RunState"]

_RECORD = 2 * STATUS.size  # exit code, limit code
_STATUS_READ = 4096
_STATUS_MAX = STATUS.size + 16 * _RECORD  # more than this on fd 3 is a snippet writing there


class RunState:
    """The state of one run between SPAWN and the end of its output."""

    __slots__ = (
        "_loop",
        "_status",
        "_status_fd",
        "disk_limited",
        "done",
        "error",
        "killed_at_shutdown",
        "limit",
        "pid",
        "reported",
        "status",
        "stderr",
        "stdout",
        "timed_out",
        "timer",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._status = b""
        self._status_fd = -1
        self.done: asyncio.Future[None] = loop.create_future()
        self.pid: int | None = None
        self.status: int | None = None  # wait status from the zygote
        self.reported: int | None = None  # exit code the child wrote on its status pipe
        self.limit = 0  # limit code the child reported with it
        self.timed_out = False
        self.disk_limited = False  # killed for writing past the disk budget
        self.killed_at_shutdown = False  # killed because the shutdown grace ran out
        self.error: ExecutorError | None = None
        self.stdout: PipeReader | None = None
        self.stderr: PipeReader | None = None
        self.timer: asyncio.TimerHandle | None = None  # the wall-clock limit; cancelled once the zygote reaped

    @property
    def ended(self) -> bool:
        """The child reported its exit code, or the zygote reaped it."""
        return self.reported is not None or self.status is not None

    def maybe_finish(self) -> None:
        """Completes the run once it ended and both pipes reached EOF."""
        if not self.ended or self.done.done():
            return
        if all(reader is None or reader.eof for reader in (self.stdout, self.stderr)):
            self.done.set_result(None)

    def finish(self) -> None:
        """Completes the run now, whatever is still open."""
        if not self.done.done():
            self.done.set_result(None)

    def fail(self, error: ExecutorError) -> None:
        """Ends the run with an executor error (not a user outcome)."""
        self.error = error
        self.finish()

    def watch_status(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        """Reads the status pipe: the child's pid as it starts, its exit code as it ends."""
        self._status_fd = fd
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._on_status)

    def _on_status(self) -> None:
        try:
            data = os.read(self._status_fd, _STATUS_READ)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data and len(self._status) < _STATUS_MAX:
            self._status += data
            if self.pid is None and len(self._status) >= STATUS.size:
                (self.pid,) = STATUS.unpack_from(self._status)
            return
        if data:
            return  # a snippet flooding fd 3: ignore the rest, the wait status will decide
        self._close_status()
        self._accept_report()
        self.maybe_finish()

    def drain_status(self) -> None:
        """Reads what is left on the status pipe once the zygote reaped the child, then weighs the report.

        The child wrote its report before it exited, so it is in the pipe now even if the pipe's
        EOF has not been seen yet (events on different fds arrive in no set order).
        """
        if self._status_fd < 0:
            return
        while len(self._status) < _STATUS_MAX:
            try:
                data = os.read(self._status_fd, _STATUS_READ)
            except OSError:
                break  # EAGAIN: a process the snippet forked still holds the pipe open
            if not data:
                break
            self._status += data
        if self.pid is None and len(self._status) >= STATUS.size:
            (self.pid,) = STATUS.unpack_from(self._status)
        self._close_status()
        self._accept_report()

    def _accept_report(self) -> None:
        """At the status pipe's EOF: takes the last (exit code, limit) record if it is plausible."""
        records = (len(self._status) - STATUS.size) // _RECORD
        if records < 1 or len(self._status) > _STATUS_MAX:
            return
        offset = STATUS.size + (records - 1) * _RECORD
        (code,) = STATUS.unpack_from(self._status, offset)
        (limit,) = STATUS.unpack_from(self._status, offset + STATUS.size)
        if 0 <= code <= 255 and (limit == 0 or limit in LIMIT_NAMES):
            self.reported, self.limit = code, limit

    def _close_status(self) -> None:
        if self._status_fd >= 0:
            self._loop.remove_reader(self._status_fd)
            os.close(self._status_fd)
            self._status_fd = -1

    def close(self) -> None:
        """Releases the run's pipes."""
        self._close_status()
        for reader in (self.stdout, self.stderr):
            if reader is not None:
                reader.close()

    def result(self, duration: float) -> RunResult:
        """The run's output and its outcome: the exit as reported, else as the zygote's wait status says."""
        assert self.stdout is not None
        assert self.stderr is not None
        if self.reported is not None:
            exit_status = self.reported
        else:
            assert self.status is not None
            exit_status = os.waitstatus_to_exitcode(self.status)
        outcome = RunOutcome.observed(
            exit_status,
            timed_out=self.timed_out,
            output_limited=self.stdout.limited or self.stderr.limited,
            disk_limited=self.disk_limited,
            at_shutdown=self.killed_at_shutdown,
            limit=LIMIT_NAMES.get(self.limit),
        )
        return RunResult(self.stdout.text(), self.stderr.text(), outcome, duration, self.pid)
