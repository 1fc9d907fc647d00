"""Per-run resource limits (rlimits): what they are, how they are applied, how a breach is named.

Applying them also raises the run's ``oom_score_adj``: when memory runs out, the kernel's OOM
killer then picks a run rather than the zygote or a server worker (raising it needs no privilege).

Standard library only: the zygote imports it. Limits apply to the fork executor's children
(``setrlimit`` after fork) and to pooled node processes (``prlimit`` right after spawn); the thread
executor runs inside the server and cannot have them. ``RLIMIT_NPROC`` counts every process of a
user, so it is only applied when each run has its own uid (service started as root).
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["LIMIT_NAMES", "RUN_OOM_SCORE_ADJ", "RunLimits", "limit_code_of"]

_MB = 1024 * 1024
# Added to a run's OOM badness (-1000..1000); the service's own processes keep theirs.
RUN_OOM_SCORE_ADJ = 500
_OOM_SCORE_ADJ_TEXT = str(RUN_OOM_SCORE_ADJ).encode()

# Codes a child reports on its status pipe when an exception shows it hit a limit.
LIMIT_NAMES: dict[int, str] = {1: "memory", 2: "file size", 3: "open files"}
_CODES = {name: code for code, name in LIMIT_NAMES.items()}


@dataclass(frozen=True, slots=True)
class RunLimits:
    """Limits of one run; 0 means unlimited."""

    memory_mb: int = 2048
    cpu_seconds: int = 0
    max_file_size_mb: int = 1024
    max_open_files: int = 1024
    max_processes: int = 256

    def rlimits(self, per_run_uid: bool) -> list[tuple[int, tuple[int, int]]]:
        """The (resource, (soft, hard)) pairs to set; the CPU soft limit is below the hard one (SIGXCPU first)."""
        pairs = [(resource.RLIMIT_CORE, (0, 0))]
        if self.memory_mb:
            pairs.append((resource.RLIMIT_DATA, (self.memory_mb * _MB, self.memory_mb * _MB)))
        if self.cpu_seconds:
            pairs.append((resource.RLIMIT_CPU, (self.cpu_seconds, self.cpu_seconds + 1)))
        if self.max_file_size_mb:
            size = self.max_file_size_mb * _MB
            pairs.append((resource.RLIMIT_FSIZE, (size, size)))
        if self.max_open_files:
            pairs.append((resource.RLIMIT_NOFILE, (self.max_open_files, self.max_open_files)))
        if self.max_processes and per_run_uid:
            pairs.append((resource.RLIMIT_NPROC, (self.max_processes, self.max_processes)))
        return pairs

    def apply(self, per_run_uid: bool, pid: int = 0) -> None:
        """Sets the limits on this process (``pid=0``) or on another one (``prlimit``), and raises its OOM score."""
        for which, values in self.rlimits(per_run_uid):
            if pid:
                resource.prlimit(pid, which, values)
            else:
                resource.setrlimit(which, values)
        _raise_oom_score(pid)

    @classmethod
    def from_settings(cls, settings: Any) -> RunLimits:
        """The limits configured in :class:`~dify_sandbox.config.Settings` (typed loosely: the zygote
        imports this module and must not import pydantic)."""
        return cls(
            memory_mb=settings.memory_limit_mb,
            cpu_seconds=settings.cpu_limit_seconds,
            max_file_size_mb=settings.max_file_size_mb,
            max_open_files=settings.max_open_files,
            max_processes=settings.max_processes,
        )

    def to_dict(self) -> dict[str, int]:
        """For the zygote's JSON start-up document."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunLimits:
        """Inverse of :meth:`to_dict`."""
        return cls(**{key: int(value) for key, value in data.items()})


def _raise_oom_score(pid: int) -> None:
    """Makes the process the OOM killer's first choice; a /proc that refuses leaves it the service's odds."""
    with contextlib.suppress(OSError):
        fd = os.open(f"/proc/{pid or 'self'}/oom_score_adj", os.O_WRONLY)
        try:
            os.write(fd, _OOM_SCORE_ADJ_TEXT)
        finally:
            os.close(fd)


def limit_code_of(exc: BaseException) -> int:
    """The limit an uncaught exception shows was hit (0: none)."""
    if isinstance(exc, MemoryError):
        return _CODES["memory"]
    if isinstance(exc, OSError):
        if exc.errno == errno.EFBIG:
            return _CODES["file size"]
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            return _CODES["open files"]
    return 0
