"""The seccomp denylist: the few syscalls no snippet needs and an attacker would, refused with EPERM.

It is a denylist on purpose: every library keeps working, because everything not named here is
allowed. What is refused reaches into other processes (``ptrace``, ``process_vm_*``,
``pidfd_getfd``, ``kcmp``), System V IPC (its objects are shared by every process of the
container and outlive the run that made them: a channel between tenants, and a store for later
runs; Python's and Node.js's shared memory and semaphores are POSIX ones, which stay allowed), the
kernel's larger attack surfaces (``bpf``, ``perf_event_open``, ``userfaultfd``, ``io_uring``,
keyrings), or out of the run's view of the system (namespaces,
mounts, modules, ``kexec``, clocks, swap, reboot). An offline run is also refused ``socket()`` of
every family but ``AF_UNIX``, which closes UDP, raw sockets and netlink as well as TCP.

The filter is compiled by libseccomp (through ``pyseccomp``, a ctypes binding API-compatible with
libseccomp's own Python module, which is not on PyPI) in the server worker, which knows the
architecture and syscall numbers; the zygote and the node launcher receive the compiled BPF and
load it with one ``seccomp(2)`` call, without importing anything but the standard library.
"""

from __future__ import annotations

import ctypes
import errno
import os
import tempfile
from typing import Any

__all__ = ["DENIED", "SyscallFilter", "compile_programs"]

_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_AF_UNIX = 1
# clone(2)'s flags that make a new namespace (clone's first argument on x86_64 and arm64).
_CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x80)

DENIED = (
    # other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    # System V IPC: container-wide objects that outlive the run
    "shmget", "shmat", "shmdt", "shmctl", "msgget", "msgsnd", "msgrcv", "msgctl",
    "semget", "semop", "semtimedop", "semctl",
    # large kernel attack surfaces
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "fanotify_init", "lookup_dcookie",
    # namespaces and mounts
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "open_by_handle_at", "name_to_handle_at",
    # the machine itself
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
    "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "settimeofday", "clock_settime",
    "clock_adjtime", "adjtimex", "syslog", "vhangup", "iopl", "ioperm", "uselib", "nfsservctl",
)  # fmt: skip


def compile_programs() -> tuple[bytes, bytes]:
    """The BPF programs of the denylist and of the offline addition; raises OSError without libseccomp.

    An offline run loads both: the second refuses ``socket()`` of any family but ``AF_UNIX``.
    """
    try:
        import pyseccomp  # type: ignore[import-untyped]  # no stubs; a small ctypes module
    except (ImportError, RuntimeError) as exc:  # pyseccomp raises RuntimeError without libseccomp
        raise OSError(errno.ENOSYS, f"libseccomp is not available: {exc}") from exc
    refuse = pyseccomp.ERRNO(errno.EPERM)

    def new_filter() -> Any:
        rules = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
        rules.set_attr(pyseccomp.Attr.ACT_BADARCH, pyseccomp.KILL_PROCESS)  # no 32-bit syscall table detour
        # A binary tree of syscall numbers rather than a list: the kernel runs a filter over every
        # syscall number as it loads it (to cache what is always allowed); this is ~3x cheaper.
        rules.set_attr(pyseccomp.Attr.CTL_OPTIMIZE, 2)
        return rules

    denylist = new_filter()
    for name in DENIED:
        if pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name) >= 0:  # older libseccomp may not know it
            denylist.add_rule(refuse, name)
    for flag in _CLONE_NAMESPACE_FLAGS:
        denylist.add_rule(refuse, "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, flag, flag))
    # Limits, priorities and CPU placement of this process only (pid or who 0): never the service's.
    for name, arg in (("prlimit64", 0), ("sched_setaffinity", 0), ("sched_setscheduler", 0), ("sched_setparam", 0),
                      ("sched_setattr", 0), ("setpriority", 1), ("ioprio_set", 1)):  # fmt: skip
        denylist.add_rule(refuse, name, pyseccomp.Arg(arg, pyseccomp.NE, 0))
    # clone3 passes its flags in memory, out of a filter's sight: ENOSYS makes the C library fall back to clone.
    denylist.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
    offline = new_filter()
    offline.add_rule(refuse, "socket", pyseccomp.Arg(0, pyseccomp.NE, _AF_UNIX))
    return _exported(denylist), _exported(offline)


def _exported(rules: Any) -> bytes:
    with tempfile.TemporaryFile() as out:
        rules.export_bpf(out)
        out.seek(0)
        return out.read()


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


class SyscallFilter:
    """A compiled filter held ready to load: the program's buffer is made once, loading is one syscall."""

    def __init__(self, program: bytes) -> None:
        if len(program) % 8 or not program:
            raise ValueError(f"a BPF program is a multiple of 8 bytes, got {len(program)}")
        self._buffer = ctypes.create_string_buffer(program, len(program))
        self._prog = _SockFprog(len(program) // 8, ctypes.addressof(self._buffer))
        self._prctl = ctypes.CDLL(None, use_errno=True).prctl

    def load(self) -> None:
        """Applies the filter to this process and all it starts; needs ``no_new_privs`` (set first)."""
        if self._prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(self._prog), 0, 0) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"seccomp: {os.strerror(code)}")
