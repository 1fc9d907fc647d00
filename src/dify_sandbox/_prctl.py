"""The two ``prctl(2)`` calls the service makes, through libc (Linux only; elsewhere they do nothing)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["become_subreaper", "forbid_inspection"]

_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name, use_errno=True) if name else None


def _prctl(option: int, value: int) -> bool:
    libc = _libc()
    return libc is not None and libc.prctl(option, value, 0, 0, 0) == 0


def forbid_inspection() -> bool:
    """Marks this process non-dumpable.

    Its ``/proc/<pid>/environ``, ``mem`` and ``fd`` then need CAP_SYS_PTRACE to read, so a snippet
    running as the same user cannot read the API key from a server process's environment block
    (which ``os.environ.pop`` does not erase). No core dumps either.
    """
    return _prctl(_PR_SET_DUMPABLE, 0)


def become_subreaper() -> bool:
    """Makes orphans of our children (double forks) our children, so we reap them and not init."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)
