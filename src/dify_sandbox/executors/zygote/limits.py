"""Kernel-level limits for a run: rlimits applied in the child, and killing a run's process group."""

from __future__ import annotations

import contextlib
import os
import resource
import signal

__all__ = ["apply_child_limits", "kill_group"]


def apply_child_limits() -> None:
    """Limits applied to every run child before the snippet starts.

    No core files: a segfaulting snippet must not write one into its run dir or hand one to the
    host's core handler, which can take seconds.
    """
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def kill_group(pgid: int) -> None:
    """SIGKILLs every process of a run's group; a group that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
