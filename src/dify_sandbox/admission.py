"""Admission control per server worker: ``MAX_REQUESTS`` in flight (else 503), ``MAX_WORKERS`` running.

Also where the drain state lives: once shutdown begins, ``/health`` answers 503, new runs are
refused, and the server waits for ``in_flight`` to reach zero.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from dify_sandbox.errors import OverloadedError, ShuttingDownError
from dify_sandbox.metrics import SandboxMetrics

__all__ = ["Admission"]


class Admission:
    """Counts runs in flight, bounds how many execute at once, and knows whether we are draining."""

    def __init__(self, max_requests: int, max_workers: int, metrics: SandboxMetrics | None = None) -> None:
        self.max_requests = max_requests
        self.max_workers = max_workers
        self.metrics = metrics
        self.in_flight = 0
        self.running = 0
        self.draining = False
        # A forced shutdown (second SIGINT): runs still in flight are killed and answered with an error.
        self.forced = False
        self._slots = asyncio.Semaphore(max_workers)

    @property
    def waiting(self) -> int:
        """Runs admitted but not yet executing."""
        return self.in_flight - self.running

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[float]:
        """Admits one run and holds an execution slot; yields the seconds spent waiting for it."""
        if self.draining:
            raise ShuttingDownError()
        if self.in_flight >= self.max_requests:
            raise OverloadedError()
        self.in_flight += 1
        self._publish(in_flight=True, waiting=True)
        ran = False
        try:
            queued = time.monotonic()
            async with self._slots:
                self.running += 1
                ran = True
                self._publish(in_flight=False, waiting=True)
                try:
                    yield time.monotonic() - queued
                finally:
                    self.running -= 1
        finally:
            self.in_flight -= 1
            # A run that executed leaves both counts at once, so ``waiting`` changes only for one
            # that gave up while it waited.
            self._publish(in_flight=True, waiting=not ran)

    def _publish(self, in_flight: bool, waiting: bool) -> None:
        # Only the gauges that changed: each write is a locked write to a shared metrics file.
        if self.metrics is not None:
            if in_flight:
                self.metrics.in_flight.set(self.in_flight)
            if waiting:
                self.metrics.waiting.set(self.waiting)
