"""Erasing a variable from this process's initial environment block, which ``/proc/<pid>/environ`` shows.

``os.environ.pop`` (``unsetenv``) only drops the C library's pointer to ``NAME=value``; the bytes
stay where the kernel put them at ``exec``, between ``env_start`` and ``env_end`` of
``/proc/self/stat``, and anyone allowed to read ``/proc/<pid>/environ`` still sees them. The
supervisor is often PID 1 of a container, whose block holds what the container was started with,
``API_KEY`` included. Overwriting those bytes with NULs leaves nothing to read. Linux only; elsewhere
it does nothing.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["erase_from_environment"]

# Fields 50 and 51 of /proc/<pid>/stat (proc(5)), counted after the command name's closing paren.
_ENV_START_FIELD = 50 - 3
_ENV_END_FIELD = 51 - 3


def erase_from_environment(name: str) -> int:
    """Removes ``name`` from ``os.environ`` and overwrites every ``name=...`` in the initial block; returns how many."""
    os.environ.pop(name, None)
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
        start, end = int(fields[_ENV_START_FIELD]), int(fields[_ENV_END_FIELD])
    except (OSError, IndexError, ValueError):
        return 0
    if not 0 < start < end:
        return 0
    block = ctypes.string_at(start, end - start)
    prefix = name.encode() + b"="
    erased = 0
    offset = 0
    for entry in block.split(b"\0"):
        if entry.startswith(prefix):
            # unsetenv already took the C library's pointer to it; nothing reads these bytes but /proc.
            ctypes.memset(start + offset, 0, len(entry))
            erased += 1
        offset += len(entry) + 1
    return erased
