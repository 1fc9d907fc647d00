"""What isolates runs beyond a process group, and which of it this host allows.

- **Per-run uids** (service started as root): each run gets a uid of its own from its worker's
  pool (``run_uids.py``), owns its dir, cannot read the service's files, is limited by
  ``RLIMIT_NPROC``, and everything it started, even outside its group, is found by uid and killed.
- **Network namespace** (needs CAP_SYS_ADMIN): a run that asks ``enable_network: false`` gets a
  namespace with no interface up. Without it, such a run only loses the proxy settings.
- **Orphan sweep** (always): the zygote is a child subreaper, so a process that escapes its group
  (setsid + double fork) becomes the zygote's child; it is killed when a run that was in flight
  when it started ends.

Standard library only (``ctypes`` for ``unshare``): the zygote imports it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sysconfig
import time
from dataclasses import dataclass

from dify_sandbox._procfs import children_of, proc_state

__all__ = [
    "Isolation",
    "drop_privileges",
    "enter_network_namespace",
    "now_ticks",
    "orphans",
    "probe_network_namespace",
    "unreadable_for",
]

_CLONE_NEWNET = 0x40000000
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Isolation:
    """The mechanisms active in this zygote (logged at start, sent to the worker in the READY frame)."""

    per_run_uids: bool
    network_namespace: bool
    subreaper: bool

    def to_bits(self) -> int:
        """Packs the flags for the READY frame."""
        return int(self.per_run_uids) | int(self.network_namespace) << 1 | int(self.subreaper) << 2

    @classmethod
    def from_bits(cls, bits: int) -> Isolation:
        """Inverse of :meth:`to_bits`."""
        return cls(per_run_uids=bool(bits & 1), network_namespace=bool(bits & 2), subreaper=bool(bits & 4))


def _unshare(flags: int) -> bool:
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    return bool(ctypes.CDLL(name, use_errno=True).unshare(flags) == 0)


def enter_network_namespace() -> bool:
    """Moves this process into a fresh network namespace (no interface up); False if not allowed."""
    return _unshare(_CLONE_NEWNET)


def probe_network_namespace() -> bool:
    """Whether runs can get a network namespace here (tried in a throwaway child)."""
    pid = os.fork()
    if pid == 0:
        os._exit(0 if enter_network_namespace() else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def unreadable_for(uid: int) -> str | None:
    """The first Python path (stdlib, site-packages) that ``uid`` cannot read, tried in a throwaway child.

    Per-run users only work when the interpreter and its packages are world-readable (as in a
    container image); an interpreter under /root, say, is not, and imports would fail.
    """
    paths = [os.path.dirname(os.__file__), *sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        bad = ""
        try:
            drop_privileges(uid)
            bad = next((path for path in paths if not _readable(path)), "")
        except OSError as exc:
            bad = f"cannot switch to uid {uid}: {exc}"
        os.write(write_end, bad.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer:
        bad = answer.read().decode()
    os.waitpid(pid, 0)
    return bad or None


def _readable(path: str) -> bool:
    try:
        os.listdir(path)
    except OSError:
        return False
    return True


def drop_privileges(uid: int) -> None:
    """Becomes ``uid`` (and group ``uid``) for good, with no supplementary groups."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def now_ticks() -> int:
    """The boot-time clock in the unit of ``/proc/<pid>/stat`` start times."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * _CLOCK_TICKS)


def orphans(known: set[int]) -> list[tuple[int, int]]:
    """Children of this process that are not runs, with their start time in ticks."""
    found = []
    for pid in children_of(os.getpid()):
        state = proc_state(pid) if pid not in known else None
        if state is not None:
            found.append((pid, state.started))
    return found
