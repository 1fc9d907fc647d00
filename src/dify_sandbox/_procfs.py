"""Reading ``/proc`` and killing processes: the few facts the service needs, in one place.

Standard library only, so the zygote can import it. Every function tolerates processes that
vanish while being read.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass

__all__ = ["ProcState", "children_of", "kill_group", "proc_state"]


@dataclass(frozen=True, slots=True)
class ProcState:
    """A process's state letter (``Z`` for a zombie) and start time in boot-clock ticks."""

    state: str
    started: int


def proc_state(pid: int | str) -> ProcState | None:
    """Fields 3 and 22 of ``/proc/<pid>/stat``; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # Split after the parenthesised command name, which may contain spaces; field 3 is first.
            fields = stat.read().rpartition(")")[2].split()
        return ProcState(fields[0], int(fields[19]))
    except (OSError, ValueError, IndexError):
        return None


def children_of(pid: int) -> list[int]:
    """The children of ``pid``'s main thread (empty where the kernel does not list them)."""
    try:
        # Raw fd and bytes: the zygote calls this after every reap, and a text file object per call
        # would allocate (and so copy) more of the memory it shares with its children.
        fd = os.open(f"/proc/{pid}/task/{pid}/children", os.O_RDONLY)
    except OSError:
        return []
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return [int(child) for child in b"".join(chunks).split()]
    except (OSError, ValueError):
        return []
    finally:
        os.close(fd)


def kill_group(pgid: int) -> None:
    """SIGKILLs every process of a group; a group that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
