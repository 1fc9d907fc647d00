"""What a run may touch, decided once at start: the layers in force and the paths each may use.

:class:`Confinement` is the plan a server worker hands to its zygote and to every node launcher
(as JSON): the Landlock ABI to use, the read-only and read-execute paths, and the compiled seccomp
programs. :meth:`Confinement.plan` probes the host, so ``best-effort`` uses what it offers and
``strict`` refuses to start without every layer. Standard library only (the launcher imports it);
the seccomp programs are compiled by the caller.
"""

from __future__ import annotations

import base64
import os
import sys
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from dify_sandbox.confinement import landlock
from dify_sandbox.confinement.syscall_filter import compile_programs

__all__ = ["LAYER_BLOCKS", "Confinement", "IsolationMode", "Layers", "plan_for", "probe_layers", "runtime_paths"]

IsolationMode = Literal["strict", "best-effort", "off"]

# Landlock ABIs: 1 files, 4 TCP, 6 signal and abstract-socket scoping.
FULL_LANDLOCK_ABI = 6

# What each layer stops a snippet from doing (for ``dify-sandbox check`` and the logs).
LAYER_BLOCKS = {
    "landlock_files": "reading or writing any file but the runtime's and its own dir's: other runs, /tmp, the config",
    "landlock_tcp": "TCP bind and connect in runs without network",
    "landlock_scoping": "signals and abstract unix sockets towards anything outside the run",
    "seccomp_denylist": "ptrace, process_vm_*, pidfd_getfd, System V IPC, bpf, namespaces, mounts, keyrings, io_uring; "
    "sockets other than AF_UNIX in runs without network",
}
_SYSTEM_READ_EXECUTE = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# The parts of /etc that the C library, TLS, time zones and mime lookups read.
_ETC_READ = (
    "/etc/passwd", "/etc/group", "/etc/hosts", "/etc/host.conf", "/etc/resolv.conf", "/etc/nsswitch.conf",
    "/etc/gai.conf", "/etc/services", "/etc/protocols", "/etc/localtime", "/etc/timezone", "/etc/ssl",
    "/etc/ca-certificates", "/etc/pki", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
    "/etc/mime.types", "/etc/os-release", "/etc/debian_version", "/etc/alternatives", "/etc/fonts",
    f"/etc/python{sys.version_info.major}.{sys.version_info.minor}",
)  # fmt: skip
_DEVICES_READ_WRITE = ("/dev/null", "/dev/zero", "/dev/full")
_DEVICES_READ = ("/dev/random", "/dev/urandom")
_KERNEL_VIEWS = ("/proc", "/sys")


@dataclass(frozen=True, slots=True)
class Layers:
    """Which layers this host offers and the mode asks for; logged at start and shown by ``check``."""

    mode: IsolationMode
    landlock_abi: int
    seccomp: bool

    @property
    def landlock(self) -> bool:
        return self.landlock_abi >= 1

    def missing(self) -> list[str]:
        """The layers this host cannot give, in words (empty: all of them)."""
        gaps = []
        if self.landlock_abi < 1:
            gaps.append("Landlock (Linux 5.13+ with the LSM enabled): runs are not confined to their files")
        if 1 <= self.landlock_abi < 4:
            gaps.append("Landlock TCP rules (Linux 6.7+): offline runs rely on the syscall filter alone")
        if 1 <= self.landlock_abi < FULL_LANDLOCK_ABI:
            gaps.append("Landlock scoping (Linux 6.12+): runs can signal the service's processes")
        if not self.seccomp:
            gaps.append("seccomp via libseccomp (libseccomp2): no syscall denylist")
        return gaps

    def in_force(self) -> dict[str, bool]:
        """Each layer and whether runs get it."""
        on = self.mode != "off"
        return {
            "landlock_files": on and self.landlock_abi >= 1,
            "landlock_tcp": on and self.landlock_abi >= 4,
            "landlock_scoping": on and self.landlock_abi >= FULL_LANDLOCK_ABI,
            "seccomp_denylist": on and self.seccomp,
        }

    @classmethod
    def probe(cls, mode: IsolationMode, seccomp: bool) -> Layers:
        """What this kernel offers (``seccomp``: whether the filter could be compiled)."""
        return cls(mode=mode, landlock_abi=landlock.abi_version(), seccomp=seccomp)


@dataclass(frozen=True, slots=True)
class Confinement:
    """The plan for every run of a worker: Landlock rules and seccomp programs (``None`` layers are off)."""

    landlock_abi: int = 0
    read_execute: tuple[str, ...] = ()
    read: tuple[str, ...] = ()
    denylist: bytes | None = None  # seccomp program for every run
    offline: bytes | None = None  # added for runs without network: no socket but AF_UNIX

    @classmethod
    def plan(
        cls, layers: Layers, programs: tuple[bytes, bytes] | None, extra_read_execute: Iterable[str] = ()
    ) -> Confinement | None:
        """The plan for ``layers``; ``programs`` are the compiled denylist and offline filters."""
        if layers.mode == "off":
            return None
        return cls(
            landlock_abi=layers.landlock_abi,
            read_execute=(*_SYSTEM_READ_EXECUTE, *extra_read_execute),
            read=(*_ETC_READ, *_DEVICES_READ, *_KERNEL_VIEWS),
            denylist=programs[0] if programs else None,
            offline=programs[1] if programs else None,
        )

    def rules(self) -> list[landlock.PathRule]:
        """The fixed Landlock rules (the run's own dir is added when a run enters its domain)."""
        rules = [landlock.PathRule(path, landlock.READ_EXECUTE) for path in self.read_execute]
        rules += [landlock.PathRule(path, landlock.READ) for path in self.read]
        rules += [landlock.PathRule(path, landlock.READ | landlock.WRITE_FILE) for path in _DEVICES_READ_WRITE]
        rules.append(landlock.PathRule("/dev/shm", landlock.SHARED_MEMORY))  # noqa: S108 - by name only, see landlock
        return rules

    def to_dict(self) -> dict[str, Any]:
        """For the zygote's start-up document and the node launcher's argument."""
        return {
            "landlock_abi": self.landlock_abi,
            "read_execute": list(self.read_execute),
            "read": list(self.read),
            "denylist": _encode(self.denylist),
            "offline": _encode(self.offline),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Confinement:
        """Inverse of :meth:`to_dict`."""
        return cls(
            landlock_abi=int(data.get("landlock_abi", 0)),
            read_execute=tuple(str(path) for path in data.get("read_execute", ())),
            read=tuple(str(path) for path in data.get("read", ())),
            denylist=_decode(data.get("denylist")),
            offline=_decode(data.get("offline")),
        )


def _encode(program: bytes | None) -> str | None:
    return base64.b64encode(program).decode() if program is not None else None


def _decode(text: object) -> bytes | None:
    return base64.b64decode(str(text)) if text else None


def probe_layers(mode: IsolationMode) -> tuple[Layers, tuple[bytes, bytes] | None]:
    """The layers this host offers, and the compiled seccomp programs when libseccomp is there."""
    programs = None
    if mode != "off":
        try:
            programs = compile_programs()
        except OSError:
            programs = None
    return Layers.probe(mode, seccomp=programs is not None), programs


def plan_for(mode: IsolationMode, avoid: Iterable[str], *extra: str) -> Confinement | None:
    """The plan of a worker's runs: what this host offers, with the runtime's paths (see :func:`runtime_paths`)."""
    layers, programs = probe_layers(mode)
    return Confinement.plan(layers, programs, runtime_paths(avoid, *extra))


def runtime_paths(avoid: Iterable[str], *extra: str) -> list[str]:
    """The interpreter, its standard library and every import path, plus ``extra``, for reading and executing.

    A path that is ``avoid``ed or contains one (the run root, the service's working dir) is left
    out, so it cannot open up what the rules are meant to close.
    """
    avoided = [os.path.realpath(path) for path in avoid]
    candidates = [
        sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        *(sysconfig.get_paths().values()), *sys.path, *extra,
    ]  # fmt: skip
    found: list[str] = []
    for path in candidates:
        if not path or not os.path.exists(path):
            continue
        real = os.path.realpath(path)
        if any(_contains(real, other) for other in avoided) or real in found:
            continue
        found.append(real)
    return found


def _contains(outer: str, inner: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")
