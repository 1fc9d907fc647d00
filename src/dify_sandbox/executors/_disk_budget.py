"""The per-run disk budget: a run whose own dir grows past ``SANDBOX_MAX_DISK_BYTES`` is killed.

A run may write only beneath its own dir (Landlock), so that dir is what it costs the disk.
``RLIMIT_FSIZE`` caps one file; this caps the sum, files and directories alike, so that one run
cannot fill the disk or its inodes for the others. Runs are measured every ``INTERVAL`` seconds once
they have run that long (most finish sooner and are never measured), all of them in one pass on a
worker thread; a walk stops as soon as it is over the budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["DiskBudget", "DiskWatch", "usage_exceeds"]

INTERVAL = 0.5
# Every entry costs at least this much, so a flood of empty files counts against the budget too.
ENTRY_BYTES = 512


@dataclass(eq=False, slots=True)
class DiskWatch:
    """One run under watch: where its dir is (None until known) and what to do when it is over budget."""

    path_of: Callable[[], str | None]
    on_exceeded: Callable[[], None]
    since: float
    exceeded: bool = field(default=False)


def usage_exceeds(path: str, limit: int) -> bool:
    """Whether the tree at ``path`` holds more than ``limit`` bytes (allocated blocks, symlinks not followed)."""
    total = 0
    pending = [path]
    while pending:
        with contextlib.suppress(OSError), os.scandir(pending.pop()) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    info = entry.stat(follow_symlinks=False)
                    total += max(info.st_blocks * 512, ENTRY_BYTES)
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                if total > limit:
                    return True
    return False


class DiskBudget:
    """Watches the dirs of in-flight runs and kills a run that writes more than ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._watches: set[DiskWatch] = set()
        self._task: asyncio.Task[None] | None = None

    def watch(self, path_of: Callable[[], str | None], on_exceeded: Callable[[], None]) -> DiskWatch | None:
        """Starts watching a run (None when there is no budget); pass the result to :meth:`unwatch`."""
        if not self.limit:
            return None
        loop = asyncio.get_running_loop()
        watch = DiskWatch(path_of, on_exceeded, loop.time())
        self._watches.add(watch)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._measure_forever())
        return watch

    def unwatch(self, watch: DiskWatch | None) -> None:
        """Stops watching a run (it ended)."""
        if watch is not None:
            self._watches.discard(watch)

    async def _measure_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while self._watches:
            await asyncio.sleep(INTERVAL)
            due = [
                (watch, path)
                for watch in list(self._watches)
                if loop.time() - watch.since >= INTERVAL and (path := watch.path_of()) is not None
            ]
            if not due:
                continue
            over = await loop.run_in_executor(None, self._over_budget, [path for _, path in due])
            for (watch, _), exceeded in zip(due, over, strict=True):
                if exceeded and watch in self._watches and not watch.exceeded:
                    watch.exceeded = True
                    watch.on_exceeded()

    def _over_budget(self, paths: list[str]) -> list[bool]:
        return [usage_exceeds(path, self.limit) for path in paths]

    def close(self) -> None:
        """Stops watching everything."""
        self._watches.clear()
        if self._task is not None:
            self._task.cancel()
