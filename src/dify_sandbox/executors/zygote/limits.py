"""Killing a run's process group (rlimits live in ``executors/_rlimits.py``)."""

from __future__ import annotations

import contextlib
import os
import signal

__all__ = ["kill_group"]


def kill_group(pgid: int) -> None:
    """SIGKILLs every process of a run's group; a group that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
