"""What one server worker owns: its settings, admission control and executors, started and closed together."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Collection

from prometheus_client import CollectorRegistry

from dify_sandbox.admission import Admission
from dify_sandbox.config import Settings
from dify_sandbox.executors import create_executor
from dify_sandbox.executors.base import Executor, Language
from dify_sandbox.executors.node_pool import NodePool
from dify_sandbox.metrics import SandboxMetrics
from dify_sandbox.run_uids import RunUids

__all__ = ["Service"]


class Service:
    """The per-worker state shared by the routes and the server's shutdown logic."""

    def __init__(self, settings: Settings, slot: int = 0) -> None:
        self.settings = settings
        # Per-run uids (as root): this worker's slice, shared by its zygotes and its node pool.
        self.uids = RunUids.for_worker(settings.run_uid_range, settings.workers, slot)
        self.api_key = settings.api_key.get_secret_value().encode("utf-8", "surrogateescape")
        self.registry = CollectorRegistry()
        self.metrics = SandboxMetrics(self.registry)
        self.admission = Admission(settings.max_requests, settings.max_workers, self.metrics)
        self.python: Executor = create_executor(settings.executor, settings, self.metrics, self.uids)
        self.nodejs: Executor = NodePool(settings, self.metrics, self.uids)

    def key_matches(self, given: bytes) -> bool:
        """``given`` (an ``X-Api-Key`` value as sent) is the configured key; compared in constant time."""
        return hmac.compare_digest(given, self.api_key)

    async def start(self, languages: Collection[Language] = ("python3", "nodejs")) -> None:
        """Starts the executors of ``languages`` (a server worker: both); the worker serves only once this returns.

        If either cannot start, both are closed before the error propagates: the lifespan's
        shutdown does not run after a failed start-up, and what was started must not outlive it.
        """
        if self.uids is not None:
            self.uids.kill_leftovers()  # of the worker this one replaces: its uids are handed out again
        starts = [asyncio.ensure_future(self.executor(language).start()) for language in languages]
        try:
            await asyncio.gather(*starts)
        except BaseException:
            for start in starts:  # the other one must not go on starting processes while we close
                start.cancel()
            await asyncio.gather(*starts, return_exceptions=True)
            await self.close()
            raise
        self.metrics.worker_started(self.settings.max_workers, self.settings.max_requests)

    def executor(self, language: Language) -> Executor:
        """The executor for ``language``."""
        return self.python if language == "python3" else self.nodejs

    def executor_name(self, language: Language) -> str:
        """The executor's name for logs: fork, thread or node_pool."""
        return self.settings.executor if language == "python3" else "node_pool"

    @property
    def unhealthy(self) -> bool:
        """The worker should drain and be replaced."""
        return self.python.unhealthy or self.nodejs.unhealthy

    async def rewarm(self) -> None:
        """Makes newly installed packages preloaded, without dropping in-flight runs."""
        await self.python.rewarm()

    async def kill_all(self) -> None:
        """Ends every in-flight run now (the shutdown grace has run out)."""
        await asyncio.gather(self.python.kill_all(), self.nodejs.kill_all())

    async def close(self) -> None:
        """Stops the executors; nothing they started survives."""
        await asyncio.gather(self.python.close(), self.nodejs.close())
