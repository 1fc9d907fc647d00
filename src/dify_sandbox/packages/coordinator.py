"""The supervisor's side of dependency syncs: one sync per service, and every worker re-warmed after it.

A background thread of the supervisor runs :class:`RequirementsSync` at start, every
``python_deps_update_interval``, after a failure with backoff, and when a worker asks (``update``).
Each worker holds one end of a pipe to the supervisor; messages are small tuples:

    worker → supervisor   ("update", request_id)       sync now, answer when every worker is warm
                          ("rewarmed", generation)     this worker's zygote has the new packages
    supervisor → worker   ("syncing", key)             an install for ``key`` has started (for hints)
                          ("rewarm", generation, key, ids)  put ``key``'s packages on sys.path and re-warm
                                                       (``ids``: this worker's update requests it serves)
                          ("updated", ids, error)      the requests ``ids`` are done; error "" when all installed

The thread only syncs and posts its result; the supervisor's loop (which waits on these fds)
does all the messaging, so nothing else in the supervisor runs on two threads.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import structlog

from dify_sandbox.config import Settings
from dify_sandbox.packages.pip_runner import stop_running
from dify_sandbox.packages.schedule import next_delay, parse_go_duration
from dify_sandbox.packages.sync import RequirementsSync, SyncReport

__all__ = ["DependencySupervisor", "describe_failures"]

logger = structlog.get_logger("dify_sandbox.packages")


def describe_failures(report: SyncReport) -> str:
    """``"pandas (failed: ...)"`` for each package not installed; empty when all are."""
    return "; ".join(f"{entry.name} ({entry.state}: {entry.detail})" for entry in report.not_installed())


@dataclass(slots=True)
class _Rewarm:
    """A re-warm in progress: the workers still warming, and the update requests to answer after it."""

    waiting: set[int]
    requests: list[tuple[int, int]]
    error: str
    started: float = field(default_factory=time.monotonic)


class DependencySupervisor:
    """Runs the syncs of one service and tells its workers; lives in the supervisor process."""

    def __init__(self, settings: Settings) -> None:
        self.sync = RequirementsSync(settings)
        self.interval = parse_go_duration(settings.python_deps_update_interval)
        self.key, _ = self.sync.current()  # packages already installed for it are on sys.path from the start
        self.syncing_key = self.key
        self.links: dict[int, Connection] = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._condition = threading.Condition()
        self._requests: list[tuple[int, int]] = []
        self._events: deque[tuple[Any, ...]] = deque()
        self._stopping = False
        self._thread = threading.Thread(target=self._sync_forever, name="dependency-sync", daemon=True)
        self._generation = 0
        self._rewarms: dict[int, _Rewarm] = {}

    def start(self) -> None:
        """Starts the background syncs (the first one at once)."""
        self._thread.start()

    def connect(self, slot: int, conn: Connection) -> tuple[str, str]:
        """Registers the supervisor's end of a new worker's pipe; returns the keys the worker starts with."""
        old = self.links.pop(slot, None)
        if old is not None:
            old.close()
        self.links[slot] = conn
        return self.key, self.syncing_key

    def forget(self, slot: int) -> None:
        """A worker died: it will not answer."""
        conn = self.links.pop(slot, None)
        if conn is not None:
            conn.close()
        for generation in list(self._rewarms):
            self._acknowledge(generation, slot)

    def fds(self) -> list[Any]:
        """What the supervisor's loop waits on besides the workers' sentinels."""
        return [*self.links.values(), self._wake_r]

    def handle(self, ready: list[Any]) -> None:
        """Acts on whatever of :meth:`fds` is ready."""
        for slot, conn in list(self.links.items()):
            if conn in ready:
                self._receive(slot, conn)
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)
        while self._events:
            self._on_event(self._events.popleft())

    def close(self) -> None:
        """Stops scheduling syncs and kills a pip run in progress (it is not waited for)."""
        with self._condition:
            self._stopping = True
            self._condition.notify()
        stop_running()
        for conn in self.links.values():
            conn.close()
        self.links.clear()

    # --- the supervisor's loop -------------------------------------------------------------------

    def _receive(self, slot: int, conn: Connection) -> None:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            self.forget(slot)
            return
        if message[0] == "update":
            with self._condition:
                self._requests.append((slot, int(message[1])))
                self._condition.notify()
        elif message[0] == "rewarmed":
            self._acknowledge(int(message[1]), slot)

    def _on_event(self, event: tuple[Any, ...]) -> None:
        if event[0] == "syncing":
            self.syncing_key = event[1]
            self._broadcast(("syncing", self.syncing_key))
            return
        if event[0] == "error":
            for requester, request_id in event[1]:
                self._send(requester, ("updated", [request_id], event[2]))
            return
        report: SyncReport = event[1]
        requests: list[tuple[int, int]] = event[2]
        changed = bool(report.installed_now) or report.key != self.key
        self.key = self.syncing_key = report.key
        if not changed and not requests:
            return
        self._generation += 1
        rewarm = _Rewarm(set(self.links), requests, describe_failures(report))
        self._rewarms[self._generation] = rewarm
        logger.info("Re-warming every worker", generation=self._generation, workers=len(rewarm.waiting))
        for slot in list(self.links):  # each worker learns which of its update requests this serves
            ids = [request_id for requester, request_id in requests if requester == slot]
            self._send(slot, ("rewarm", self._generation, self.key, ids))
        if not rewarm.waiting:
            self._acknowledge(self._generation, -1)

    def _acknowledge(self, generation: int, slot: int) -> None:
        rewarm = self._rewarms.get(generation)
        if rewarm is None:
            return
        rewarm.waiting.discard(slot)
        if rewarm.waiting:
            return
        del self._rewarms[generation]
        logger.info("Every worker re-warmed", generation=generation, s=round(time.monotonic() - rewarm.started, 2))
        by_slot: dict[int, list[int]] = {}
        for requester, request_id in rewarm.requests:
            by_slot.setdefault(requester, []).append(request_id)
        for requester, ids in by_slot.items():
            self._send(requester, ("updated", ids, rewarm.error))

    def _broadcast(self, message: tuple[Any, ...]) -> None:
        for slot in list(self.links):
            self._send(slot, message)

    def _send(self, slot: int, message: tuple[Any, ...]) -> None:
        conn = self.links.get(slot)
        if conn is None:
            return
        try:
            conn.send(message)
        except OSError:
            self.forget(slot)

    # --- the sync thread -------------------------------------------------------------------------

    def _post(self, event: tuple[Any, ...]) -> None:
        self._events.append(event)
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"!")

    def _sync_forever(self) -> None:
        due = time.monotonic()
        failures = 0
        while True:
            with self._condition:
                while not self._stopping and not self._requests and time.monotonic() < due:
                    self._condition.wait(timeout=max(0.0, due - time.monotonic()))
                if self._stopping:
                    return
                requests, self._requests = self._requests, []
            try:
                report = self.sync.run(on_pending=lambda key, _status: self._post(("syncing", key)))
            except Exception as exc:
                logger.exception("Dependency sync failed")
                failures += 1
                due = time.monotonic() + next_delay(self.interval, failures)
                self._post(("error", requests, f"dependency sync failed: {exc}"))
                continue
            failures = 0 if report.ok else failures + 1
            due = time.monotonic() + next_delay(self.interval, failures)
            if not report.ok:
                logger.warning("Requirements will be synced again", retry_in_s=round(due - time.monotonic(), 1))
            self._post(("done", report, requests))
