"""A worker's end of the pipe to the supervisor's :class:`~dify_sandbox.packages.coordinator.DependencySupervisor`.

``update`` asks the supervisor for a sync and waits until every worker has re-warmed; a
``rewarm`` from the supervisor (after ``update`` or a background install) puts the new packages on
sys.path and re-warms this worker's executors without dropping in-flight runs. Messages are read
with a reader callback on the worker's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

import structlog

from dify_sandbox.packages.view import PackagesView

__all__ = ["WorkerLink"]

logger = structlog.get_logger("dify_sandbox.packages")


class WorkerLink:
    """Talks to the supervisor about dependency syncs on behalf of one worker."""

    def __init__(self, conn: Connection, view: PackagesView, rewarm: Callable[[], Awaitable[None]]) -> None:
        self.conn = conn
        self.view = view
        self._rewarm = rewarm
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[str]] = {}
        # The context of each waiting request: the re-warm it causes logs under its request id.
        self._contexts: dict[int, contextvars.Context] = {}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self) -> None:
        """Starts listening (call on the worker's event loop)."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.conn.fileno(), self._on_readable)

    async def request_update(self) -> str:
        """Asks for a sync and waits until every worker is warm; returns "" or what was not installed."""
        request_id = next(self._ids)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        self._contexts[request_id] = contextvars.copy_context()
        try:
            self.conn.send(("update", request_id))
            return await future
        finally:
            self._waiting.pop(request_id, None)
            self._contexts.pop(request_id, None)

    def close(self) -> None:
        """Stops listening; pending requests fail."""
        if self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self.conn.fileno())
            self._loop = None
        for future in self._waiting.values():
            if not future.done():
                future.set_result("the service is stopping")
        for task in self._tasks:
            task.cancel()

    def _on_readable(self) -> None:
        try:
            while self.conn.poll():
                self._dispatch(self.conn.recv())
        except (EOFError, OSError):
            logger.warning("Lost the supervisor's dependency channel")
            self.close()

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        if message[0] == "syncing":
            self.view.syncing_key = str(message[1])
        elif message[0] == "rewarm":
            served = [self._contexts[int(i)] for i in message[3] if int(i) in self._contexts]
            context = served[0].copy() if served else None  # a background install's re-warm has no request
            task = asyncio.create_task(self._apply(int(message[1]), str(message[2])), context=context)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif message[0] == "updated":
            for request_id in message[1]:
                future = self._waiting.get(int(request_id))
                if future is not None and not future.done():
                    future.set_result(str(message[2]))

    async def _apply(self, generation: int, key: str) -> None:
        async with self._lock:
            self.view.activate(key)
            try:
                await self._rewarm()
            except Exception:
                logger.exception("Re-warm after a dependency sync failed")
            with contextlib.suppress(OSError):
                self.conn.send(("rewarmed", generation))
