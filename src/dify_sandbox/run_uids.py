"""Per-run uids (service started as root): one pool per server worker, shared by its zygotes and node pool.

Every run, Python or Node.js, gets a uid that no other run in flight has. The configured range
(``SANDBOX_RUN_UIDS``) is cut into one slice per server worker slot plus one for the operator
commands (``check``, ``run``), so no two of them hand out the same uid, and a worker's zygotes (a
retiring one beside its replacement) and node processes draw from the same pool. A uid returns to
the pool only once nothing of its run is left: the zygote kills every process of the uid before it
reports a run's exit, the node pool after a node run. A worker that starts kills whatever its
slice still runs (leftovers of the worker it replaces). Two services on one host need ranges of
their own.
"""

from __future__ import annotations

import contextlib
import os
import signal

from dify_sandbox._procfs import proc_state

__all__ = ["RunUids", "kill_uids"]


class RunUids:
    """Hands out the uids ``first..last`` so that no two in-flight runs share one."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self._free = list(range(last, first - 1, -1))

    @classmethod
    def for_worker(cls, uid_range: tuple[int, int] | None, workers: int, slot: int) -> RunUids | None:
        """Worker ``slot``'s slice of ``uid_range`` (slot ``workers``: the operator commands' slice).

        None without per-run uids, or when the range is too small to slice.
        """
        if uid_range is None:
            return None
        first, last = uid_range
        size = (last - first + 1) // (max(workers, 1) + 1)
        if size < 1:
            return None
        start = first + slot * size
        return cls(start, start + size - 1)

    def acquire(self) -> int | None:
        """A uid no in-flight run has, or None when the slice is exhausted."""
        return self._free.pop() if self._free else None

    def release(self, uid: int) -> None:
        """Returns a uid once nothing of its run is left (the least recently used is handed out last)."""
        self._free.insert(0, uid)

    def kill_leftovers(self) -> int:
        """SIGKILLs every process of this slice (at worker start); returns how many."""
        return kill_uids(self.first, self.last)


def kill_uids(first: int, last: int, rounds: int = 50) -> int:
    """SIGKILLs every live process owned by a uid in ``first..last``, scanning again until none is left.

    A fork bomb cannot outrun it: each scan kills what it finds, and the next starts over.
    """
    killed = 0
    for _ in range(rounds):
        found = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if first <= entry.stat().st_uid <= last:
                    state = proc_state(entry.name)
                    if state is not None and state.state != "Z":
                        os.kill(int(entry.name), signal.SIGKILL)
                        found += 1
        killed += found
        if not found:
            break
    return killed
