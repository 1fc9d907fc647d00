"""What one server worker owns: its settings, admission control and executors, started and closed together."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Collection
from multiprocessing.connection import Connection

from prometheus_client import CollectorRegistry

from dify_sandbox.admission import Admission
from dify_sandbox.api.refused_keys import RefusedKeyLog
from dify_sandbox.config import Settings
from dify_sandbox.executors import create_executor
from dify_sandbox.executors.base import Executor, Language
from dify_sandbox.executors.node.pool import NodePool
from dify_sandbox.metrics import DependencyCollector, SandboxMetrics
from dify_sandbox.packages.coordinator import describe_failures
from dify_sandbox.packages.report import package_states, sync_summary
from dify_sandbox.packages.status import PACKAGE_STATES
from dify_sandbox.packages.sync import RequirementsSync
from dify_sandbox.packages.view import PackagesView
from dify_sandbox.packages.worker_link import WorkerLink
from dify_sandbox.run_uids import RunUids

__all__ = ["Service"]


class Service:
    """The per-worker state shared by the routes and the server's shutdown logic."""

    def __init__(
        self,
        settings: Settings,
        slot: int = 0,
        supervisor: Connection | None = None,
        package_keys: tuple[str, str] | None = None,
    ) -> None:
        self.settings = settings
        # Before the executors: the zygote preloads from the package dir the view puts on sys.path.
        active, syncing = package_keys or (RequirementsSync(settings).current()[0],) * 2
        self.packages = PackagesView(settings, active, syncing)
        self.link = WorkerLink(supervisor, self.packages, self.rewarm) if supervisor is not None else None
        self.dependency_metrics = DependencyCollector(
            lambda: (package_states(settings, self.packages), sync_summary(self.packages)), PACKAGE_STATES
        )
        # Per-run uids (as root): this worker's slice, shared by its zygotes and its node pool.
        self.uids = RunUids.for_worker(settings.run_uid_range, settings.workers, slot)
        self.api_key = settings.api_key.get_secret_value().encode("utf-8", "surrogateescape")
        self.refused_keys = RefusedKeyLog()
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
        if self.link is not None:
            self.link.attach()
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

    async def update_dependencies(self) -> str:
        """Syncs the requirement files and re-warms every worker; "" or what could not be installed.

        Under the supervisor the sync is the service's one sync; without it (``dify-sandbox run``,
        in-process tests) this process syncs itself.
        """
        if self.link is not None:
            return await self.link.request_update()
        report = await asyncio.to_thread(RequirementsSync(self.settings).run)
        self.packages.activate(report.key)
        await self.rewarm()
        return describe_failures(report)

    async def kill_all(self) -> None:
        """Ends every in-flight run now (the shutdown grace has run out)."""
        await asyncio.gather(self.python.kill_all(), self.nodejs.kill_all())

    async def close(self) -> None:
        """Stops the executors; nothing they started survives."""
        if self.link is not None:
            self.link.close()
        await asyncio.gather(self.python.close(), self.nodejs.close())
