"""Finding what a Node.js run left running outside its process group, once the run has ended.

Confined runs (``confinement/launch.py``): every node process is a child subreaper, so whatever a
run detaches from itself (``detached: true``, ``setsid``, a double fork) stays its child while it
runs, and becomes the server worker's child (the worker is a subreaper too) when it exits. Such a
process still carries the run's seccomp filters, which nothing can remove, so the worker's
children with more filters than the worker itself and no place in the pool are exactly the
leftovers of finished runs, whatever they did to their environment, group or name.

Unconfined runs (``SANDBOX_ISOLATION=off``): a run's children inherit its environment, whose
``TMPDIR`` names the run's private dir; ``/proc/<pid>/environ`` keeps the environment a process was
started with, so a detached child is still recognisable after the run ended. A child started with a
custom environment is not: the timeout and the group kill are the backstop.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Container

__all__ = ["kill_by_environment", "kill_confined_orphans"]

_FILTERS_FIELD = "Seccomp_filters:"


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


def _seccomp_filters(pid: int) -> int | None:
    """``Seccomp_filters`` of ``/proc/<pid>/status`` (Linux 5.9+); None if unreadable or not counted."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(_FILTERS_FIELD):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def kill_confined_orphans(keep: Container[int]) -> list[int]:
    """SIGKILLs our children that carry more seccomp filters than we do, but those in ``keep``; returns their pids.

    ``keep`` holds the node processes the pool started and has not yet reaped (pooled and running
    ones carry the filters too). Cheap enough for the event loop, which is where the pool adds to
    ``keep``, so no process is seen between its start and its entry there. The caller reaps the
    returned pids (``reap``): they are ours, the subreaper inherited them.
    """
    me = os.getpid()
    own = _seccomp_filters(me)
    if own is None:  # a kernel that does not count filters: the environment sweep remains
        return []
    killed = []
    for pid in _children_of_any_thread(me):
        filters = _seccomp_filters(pid) if pid not in keep else None
        if filters is None or filters <= own:
            continue
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def reap(pids: list[int]) -> None:
    """Waits for each of these (killed) children of ours; blocks until they are gone."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _children_of_any_thread(pid: int) -> list[int]:
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/task/{task}/children", "rb") as listed:
                children.extend(int(child) for child in listed.read().split())
    return children
