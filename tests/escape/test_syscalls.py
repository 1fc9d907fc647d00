"""The seccomp denylist: namespaces, mounts, System V IPC, keyrings, BPF, perf, userfaultfd, io_uring, modules, kexec.

Each call is made through libc's `syscall` with x86_64 numbers and arguments that would succeed for
an unprivileged user where the kernel allows it at all (user namespaces, a private shared memory
segment, message queue or semaphore set, a session keyring, a
user-space-only userfaultfd, a self-monitoring software perf event, an io_uring). Behind the denylist
each fails with EPERM; clone3 fails with ENOSYS so that glibc falls back to clone.
"""

from __future__ import annotations

import platform

import pytest

from .attacks import python_snippet

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(platform.machine() != "x86_64", reason="the snippets use x86_64 syscall numbers"),
]

SETUP_PY = """\
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
PERF_ATTR = (ctypes.c_uint64 * 16)()
PERF_ATTR[0] = 1 | 128 << 32  # type PERF_TYPE_SOFTWARE, size 128
PERF_ATTR[1] = 1  # PERF_COUNT_SW_TASK_CLOCK
PERF_ATTR[5] = 1 | 1 << 5 | 1 << 6  # disabled, exclude_kernel, exclude_hv
BPF_MAP = (ctypes.c_uint32 * 30)(2, 4, 4, 1)  # BPF_MAP_TYPE_ARRAY, key 4, value 4, 1 entry
URING_PARAMS = (ctypes.c_uint8 * 120)()
"""

# name: the expression that makes the call.
SYSCALLS = {
    "unshare-user": "syscall(272, CLONE_NEWUSER)",
    "unshare-net": "syscall(272, CLONE_NEWNET)",
    "unshare-mount": "syscall(272, CLONE_NEWNS)",
    "setns": "syscall(308, os.open('/proc/self/ns/net', os.O_RDONLY), CLONE_NEWNET)",
    "mount": "syscall(165, b'none', os.getcwd().encode(), b'tmpfs', 0, 0)",
    "umount2": "syscall(166, b'/proc', 2)",
    "pivot_root": "syscall(155, b'.', b'.')",
    "fsopen": "syscall(430, b'tmpfs', 0)",
    "open_tree": "syscall(428, -100, b'/', 1)",
    "bpf": "syscall(321, 0, BPF_MAP, ctypes.sizeof(BPF_MAP))",
    "perf_event_open": "syscall(298, PERF_ATTR, 0, -1, -1, 0)",
    "keyctl": "syscall(250, 0, -3, 1)",  # KEYCTL_GET_KEYRING_ID of the session keyring, creating it
    "add_key": "syscall(248, b'user', b'escape', b'payload', 7, -2)",  # into the process keyring
    "request_key": "syscall(249, b'user', b'escape', 0, 0)",
    "userfaultfd": "syscall(323, 1 | os.O_CLOEXEC)",  # UFFD_USER_MODE_ONLY
    "io_uring_setup": "syscall(425, 1, URING_PARAMS)",
    "kcmp": "syscall(312, os.getpid(), os.getppid(), 1, 0, 0)",  # KCMP_VM with the zygote
    "pidfd_getfd": "syscall(438, syscall(434, os.getpid(), 0), 0, 0)",
    "kexec_load": "syscall(246, 0, 0, 0, 0)",
    "kexec_file_load": "syscall(320, -1, -1, 0, b'', 0)",
    "init_module": "syscall(175, 0, 0, b'')",
    # System V IPC: container-wide objects that outlive the run (IPC_PRIVATE, IPC_CREAT | 0600).
    "shmget": "syscall(29, 0, 4096, 0o1600)",
    "msgget": "syscall(68, 0, 0o1600)",
    "semget": "syscall(64, 0, 1, 0o1600)",
    "finit_module": "syscall(313, -1, b'', 0)",
    "delete_module": "syscall(176, b'escape', 0)",
}

CLONE_PY = """\
import subprocess


def clone_into_namespaces():
    pid = syscall(56, CLONE_NEWUSER | CLONE_NEWNET | 17, 0, 0, 0, 0)  # clone(..., SIGCHLD), fork-like
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return f"child {pid} started in new namespaces"


def clone3():
    args = (ctypes.c_uint64 * 8)()
    args[4] = 17  # exit_signal SIGCHLD
    pid = syscall(435, args, ctypes.sizeof(args))
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return f"child {pid} started"


attempt("clone with CLONE_NEWUSER | CLONE_NEWNET", clone_into_namespaces)
attempt("clone3", clone3)
# glibc falls back to clone when clone3 is refused with ENOSYS: processes still start.
done = subprocess.run(["echo", "CONTROL", "subprocess works"], capture_output=True, text=True, check=True)
print(done.stdout, end="")
pid = os.fork()
if pid == 0:
    os._exit(7)
print("CONTROL fork works" if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7 else "CONTROL fork broken")
"""


@pytest.mark.parametrize("name", list(SYSCALLS))
def test_dangerous_syscall_refused(sandbox, name):
    """The syscall fails with EPERM."""
    code = python_snippet(f"{SETUP_PY}\nattempt({name!r}, lambda: {SYSCALLS[name]})\n", syscalls=True)
    report = sandbox.attack(code)
    report.assert_blocked(at_least=1, only=("EPERM",))
    sandbox.assert_unharmed()


def test_namespace_clones_refused_while_fork_works(sandbox):
    """clone with namespace flags fails with EPERM and clone3 with ENOSYS; fork and subprocess still work."""
    report = sandbox.attack(python_snippet(f"{SETUP_PY}\n{CLONE_PY}", syscalls=True))
    assert report.reasons() == {"clone with CLONE_NEWUSER | CLONE_NEWNET": "EPERM", "clone3": "ENOSYS"}, str(report)
    report.assert_blocked(at_least=2)
    assert "CONTROL subprocess works\nCONTROL fork works\n" in report.data["stdout"], str(report)
    sandbox.assert_unharmed()
