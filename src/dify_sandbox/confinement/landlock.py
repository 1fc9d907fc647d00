"""Landlock, the unprivileged Linux LSM that confines a process to the files, ports and peers it is given.

A run calls :meth:`Domain.enter` once, after fork and before user code: from then on it (and all it
forks or executes) may read and execute only the runtime's files, read and write only its own dir,
signal and reach abstract unix sockets only within its own run, and ptrace or open
``/proc/<pid>/{mem,environ,fd}`` of no process outside its run (the ptrace rule of every domain). An
offline run adds :meth:`NetworkBan.enter`: no TCP bind or connect. What the kernel supports is used
(ABI 1: files; 2: rename across dirs; 3: truncate; 4: TCP; 6: scoping); the rest is skipped.

The rules' fds and attribute structs are built once (in the zygote); entering a domain costs one
``landlock_create_ruleset``, one ``landlock_add_rule`` per rule and one ``landlock_restrict_self``.

There is no maintained Python binding of Landlock (the PyPI packages are pre-releases), and the
kernel interface is three syscalls and three structs (see
https://docs.kernel.org/userspace-api/landlock.html), so it is called through ``ctypes`` here.
Standard library only: the zygote and the node launcher import it.
"""

from __future__ import annotations

import ctypes
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "READ",
    "READ_EXECUTE",
    "READ_WRITE",
    "SHARED_MEMORY",
    "Domain",
    "NetworkBan",
    "PathRule",
    "abi_version",
    "forbid_new_privileges",
]

# Syscall numbers are the same on every architecture (asm-generic table).
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# Filesystem access rights, and the ABI that introduced each.
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1}
# Rights that make sense on a file (the others apply to a directory's entries).
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE
_NET_BIND_TCP = 1 << 0
_NET_CONNECT_TCP = 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
_SCOPE_SIGNAL = 1 << 1

READ = READ_FILE | READ_DIR
READ_EXECUTE = READ | EXECUTE
# Everything but device nodes: a run may create, change and remove anything beneath its own dir.
READ_WRITE = READ_EXECUTE | WRITE_FILE | TRUNCATE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG
READ_WRITE |= MAKE_SOCK | MAKE_FIFO | MAKE_SYM | REFER
# /dev/shm: POSIX semaphores (multiprocessing) are files there, made and unlinked at once; a run
# may make, open and remove files by name, but not list what others made.
SHARED_MEMORY = READ_FILE | WRITE_FILE | TRUNCATE | MAKE_REG | REMOVE_FILE


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # the kernel's struct is __attribute__((packed))
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_prctl = _libc.prctl


def abi_version() -> int:
    """The Landlock ABI this kernel offers; 0 when it has none (too old, or the LSM is off)."""
    version = int(_syscall(_SYS_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION))
    return max(version, 0)


def _sizeof_attr(abi: int) -> int:
    # Older kernels reject a struct larger than they know unless the extra fields are zero; send
    # only the fields this ABI has: fs (ABI 1), net (ABI 4), scoped (ABI 6).
    if abi >= 6:
        return ctypes.sizeof(_RulesetAttr)
    return 16 if abi >= 4 else 8


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def forbid_new_privileges() -> None:
    """``no_new_privs``: nothing executed later gains privileges (set-uid bits, file caps); both layers need it."""
    _check(_prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


@dataclass(frozen=True, slots=True)
class PathRule:
    """``access`` to the file or directory at ``path`` and everything beneath it."""

    path: str
    access: int


class Domain:
    """A run's domain: fixed rules built once, plus the run's own dir added when it is entered."""

    def __init__(self, abi: int, rules: Iterable[PathRule], own_dir_access: int = READ_WRITE) -> None:
        self.abi = abi
        self.handled = _FS_BY_ABI[min(abi, 3)]
        self.own_dir_access = own_dir_access & self.handled
        self._attr = _RulesetAttr(self.handled, 0, _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0)
        self._attr_size = _sizeof_attr(abi)
        self._rules: list[_PathBeneathAttr] = []
        self.fds: list[int] = []
        for rule in rules:
            self._add_fixed(rule)

    def _add_fixed(self, rule: PathRule) -> None:
        try:
            fd = os.open(rule.path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return  # a path this host does not have
        access = rule.access & self.handled
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            access &= _FILE_RIGHTS
        if not access:
            os.close(fd)
            return
        self.fds.append(fd)
        self._rules.append(_PathBeneathAttr(access, fd))

    @property
    def paths(self) -> int:
        """How many fixed rules the domain has (paths that exist here)."""
        return len(self._rules)

    def enter(self, own_dir: str) -> None:
        """Confines this process (and all it starts) to the rules plus ``own_dir``; needs ``no_new_privs``."""
        ruleset = _check(_syscall(_SYS_CREATE_RULESET, ctypes.byref(self._attr), self._attr_size, 0), "create ruleset")
        own_fd = -1
        try:
            for rule in self._rules:
                _check(_syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0), "add rule")
            own_fd = os.open(own_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            own = _PathBeneathAttr(self.own_dir_access, own_fd)
            _check(_syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(own), 0), "add rule")
            _check(_syscall(_SYS_RESTRICT_SELF, ruleset, 0), "restrict self")
        finally:
            os.close(ruleset)
            if own_fd >= 0:
                os.close(own_fd)

    def close(self) -> None:
        """Closes the rules' fds (the domains already entered are not affected)."""
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
        self._rules.clear()


class NetworkBan:
    """A layer with no TCP port allowed: an offline run can neither bind nor connect (ABI 4 and later)."""

    def __init__(self, abi: int) -> None:
        self.available = abi >= 4
        self._attr = _RulesetAttr(0, _NET_BIND_TCP | _NET_CONNECT_TCP, 0)
        self._size = _sizeof_attr(min(abi, 5))

    def enter(self) -> None:
        """Adds the ban to this process's domain; needs ``no_new_privs``."""
        ruleset = _check(_syscall(_SYS_CREATE_RULESET, ctypes.byref(self._attr), self._size, 0), "create ruleset")
        try:
            _check(_syscall(_SYS_RESTRICT_SELF, ruleset, 0), "restrict self")
        finally:
            os.close(ruleset)
