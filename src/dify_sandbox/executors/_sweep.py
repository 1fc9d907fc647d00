"""Finding a run's processes that left its process group, by the environment they were started with.

A Node.js run's children inherit its environment, whose ``TMPDIR`` names the run's private dir;
``/proc/<pid>/environ`` keeps the environment a process was started with, so a detached child
(its own session, reparented to init) is still recognisable after the run ended. A child started
with a custom environment is not: the timeout and the group kill are the backstop.
"""

from __future__ import annotations

import contextlib
import os
import signal

__all__ = ["kill_by_environment"]


def kill_by_environment(entry: str) -> int:
    """SIGKILLs every process (readable by us) whose start-up environment contains ``entry``; returns how many."""
    needle = entry.encode() + b"\0"
    me = os.getpid()
    killed = 0
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{name}/environ", "rb") as environ:
                found = needle in environ.read() + b"\0"
            if found:
                os.kill(int(name), signal.SIGKILL)
                killed += 1
    return killed
