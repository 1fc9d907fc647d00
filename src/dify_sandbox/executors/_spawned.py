"""Starting a helper program from the event loop without copying the worker's memory, and awaiting its exit.

uvloop starts subprocesses with a plain ``fork``: the worker's page tables are copied while the
event loop waits, about 2-3 ms for a worker of 60 MB, longer once it has grown, and every request
of that worker waits with it. ``subprocess.Popen`` uses ``vfork`` when it can (no ``preexec_fn``,
no uid or group changes), which shares the memory until ``exec``. The exit is awaited on a pidfd
registered with the loop.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Collection, Mapping, Sequence

__all__ = ["SpawnedProcess"]

# Without pidfds (Linux before 5.3) the exit is polled this often.
POLL_INTERVAL = 0.01


class SpawnedProcess:
    """A started program: its pid, and ``await wait()`` for its status (negative: killed by that signal)."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self._exited: asyncio.Future[int] | None = None
        self._poller: asyncio.Task[None] | None = None

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        *,
        stdout: int,
        stderr: int,
        pass_fds: Collection[int],
        cwd: str,
        env: Mapping[str, str],
    ) -> SpawnedProcess:
        """Starts ``argv`` in a session of its own with stdin on /dev/null; raises OSError if it cannot."""
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            pass_fds=pass_fds,
            start_new_session=True,
            cwd=cwd,
            env=env,
        )
        return cls(popen)

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def exited(self) -> bool:
        """Whether it has already exited (reaped then; ``wait`` returns its status at once)."""
        return self._popen.poll() is not None

    async def wait(self) -> int:
        """The exit status, once the process has exited (and is reaped)."""
        if self._popen.poll() is not None:
            return self._popen.returncode
        if self._exited is None:
            self._exited = asyncio.get_running_loop().create_future()
            self._watch()
        return await asyncio.shield(self._exited)

    def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(self._popen.pid)
        except OSError:
            self._poller = loop.create_task(self._poll())
            return

        def on_exit() -> None:
            if self._settled():
                loop.remove_reader(pidfd)
                os.close(pidfd)

        loop.add_reader(pidfd, on_exit)

    async def _poll(self) -> None:
        while not self._settled():
            await asyncio.sleep(POLL_INTERVAL)

    def _settled(self) -> bool:
        """Reaps the process if it has exited and hands its status to the waiters; False while it runs."""
        if self._popen.poll() is None:
            return False
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(self._popen.returncode)
        return True
