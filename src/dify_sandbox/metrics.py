"""Every Prometheus metric of the service, and the multi-process wiring that sums them across workers.

Metrics are recorded only in server worker processes (never in the zygote or run children). With
``PROMETHEUS_MULTIPROC_DIR`` set (the supervisor sets it before spawning workers), each worker
writes its values to files there; ``/metrics`` on any worker reads them all, and the supervisor
calls :func:`mark_worker_dead` when a worker exits so its live gauges disappear.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, get_args

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dify_sandbox.executors.base import Language
from dify_sandbox.executors.outcome import RunLabel

__all__ = [
    "CONTENT_TYPE",
    "MULTIPROC_ENV",
    "DependencyCollector",
    "Outcome",
    "SandboxMetrics",
    "mark_worker_dead",
    "prepare_multiprocess_dir",
    "remove_multiprocess_dir",
    "render",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# How runs ended (their outcome's label), or that none ran: refused, or the executor failed.
Outcome = Literal[RunLabel, "internal_error", "rejected"]
# The helper processes whose restarts are counted.
RESTARTED_EXECUTORS = ("zygote", "node_pool")

# Runs range from sub-millisecond (thread executor) to WORKER_TIMEOUT; waits the same.
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60)


class SandboxMetrics:
    """The service's metrics; ``registry=`` lets tests use a fresh ``CollectorRegistry``."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.runs = Counter(
            "dify_sandbox_runs_total",
            "Runs by language and how they ended.",
            ["language", "outcome"],
            registry=registry,
        )
        self.run_duration = Histogram(
            "dify_sandbox_run_duration_seconds",
            "Time from the start of a run (after any queueing) to its result.",
            ["language"],
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "dify_sandbox_queue_wait_seconds",
            "Time a run waited for a MAX_WORKERS slot.",
            ["language"],
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "dify_sandbox_runs_in_flight",
            "Runs admitted and not yet answered (waiting included).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.waiting = Gauge(
            "dify_sandbox_runs_waiting",
            "Runs admitted and waiting for a MAX_WORKERS slot.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.capacity = Gauge(
            "dify_sandbox_capacity_runs",
            "Configured capacity summed over live server workers: limit=max_workers|max_requests.",
            ["limit"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.server_workers = Gauge(
            "dify_sandbox_server_workers",
            "Server worker processes alive.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.executor_restarts = Counter(
            "dify_sandbox_executor_restarts_total",
            "Helper processes restarted after they died: executor=zygote|node_pool.",
            ["executor"],
            registry=registry,
        )
        self.node_pool_idle = Gauge(
            "dify_sandbox_node_pool_idle",
            "Node.js processes started and waiting for a snippet.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.http_requests = Counter(
            "dify_sandbox_http_requests_total",
            "HTTP requests by route template and status code.",
            ["route", "status"],
            registry=registry,
        )
        # Labelled children by label values: ``labels()`` validates and sorts its arguments on every call.
        self._children: dict[tuple[object, ...], Any] = {}
        self._start_known_series()

    def _start_known_series(self) -> None:
        """Creates every known label combination at 0, so that each series exists from the first scrape.

        A labelled series appears only once its child is created; until then ``rate()`` and alerts
        on it see nothing rather than 0. In multi-process mode creating a child writes its 0 to this
        worker's file, so the sum over workers has it too.
        """
        for language in get_args(Language):
            for outcome in get_args(Outcome):
                self._child(self.runs, language, outcome)
            self._child(self.run_duration, language)
            self._child(self.queue_wait, language)
        for executor in RESTARTED_EXECUTORS:
            self._child(self.executor_restarts, executor)

    def start_route_series(self, routes: Iterable[str]) -> None:
        """Creates the ``status="200"`` request count of each route template at 0 (other statuses appear when seen)."""
        for route in routes:
            self._child(self.http_requests, route, "200")

    def _child(self, metric: Counter | Histogram, *values: str) -> Any:
        """The child of ``metric`` for ``values``, created (at 0) on first use."""
        key = (metric, *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def count_request(self, route: str, status: int) -> None:
        """Counts one HTTP request by route template and status code."""
        self._child(self.http_requests, route, str(status)).inc()

    def worker_started(self, max_workers: int, max_requests: int) -> None:
        """Publishes this worker's share of the configured capacity."""
        self.server_workers.set(1)
        self.capacity.labels(limit="max_workers").set(max_workers)  # set at once: no 0 to start from
        self.capacity.labels(limit="max_requests").set(max_requests)

    def record_run(self, language: str, outcome: Outcome, duration: float | None, queued: float | None) -> None:
        """Counts one run and, when it ran, its duration and queue wait."""
        self._child(self.runs, language, outcome).inc()
        if duration is not None:
            self._child(self.run_duration, language).observe(duration)
        if queued is not None:
            self._child(self.queue_wait, language).observe(queued)


# Rows of ``{"name", "state"}`` per package and the last sync's ``{"result", "duration_s", "finished_at"}``.
DependencySnapshot = tuple[Sequence[Mapping[str, Any]], Mapping[str, Any]]


class DependencyCollector(Collector):
    """Each package's state and the last dependency sync, read when scraped (the sync runs in the supervisor).

    The package label is bounded by the requirement files, which the operator writes.
    """

    def __init__(self, snapshot: Callable[[], DependencySnapshot], states: Sequence[str]) -> None:
        self.snapshot = snapshot
        self.states = states

    def collect(self) -> Iterator[Metric]:
        rows, last = self.snapshot()
        state = GaugeMetricFamily(
            "dify_sandbox_dependency_state",
            "1 for the state each requirement is in: installed, pending, failed, refused or missing.",
            labels=["package", "state"],
        )
        for row in rows:
            for name in self.states:
                state.add_metric([str(row["name"]), name], 1.0 if row["state"] == name else 0.0)
        yield state
        duration = GaugeMetricFamily(
            "dify_sandbox_dependency_sync_duration_seconds", "How long the last dependency sync took."
        )
        duration.add_metric([], float(last.get("duration_s") or 0.0))
        yield duration
        ok = GaugeMetricFamily(
            "dify_sandbox_dependency_sync_ok", "1 if the last sync left every requirement installed, else 0."
        )
        ok.add_metric([], 1.0 if last.get("result") == "ok" else 0.0)
        yield ok
        finished = GaugeMetricFamily(
            "dify_sandbox_dependency_sync_timestamp_seconds", "When the last dependency sync finished (Unix time)."
        )
        finished.add_metric([], float(last.get("finished_at") or 0.0))
        yield finished


def render(registry: CollectorRegistry, *extra: Collector) -> bytes:
    """The exposition text: every worker's values when multi-process, else ``registry``'s; then ``extra``'s."""
    tail = CollectorRegistry(auto_describe=False)
    for collector in extra:
        tail.register(collector)
    if MULTIPROC_ENV in os.environ:
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
        return generate_latest(combined) + generate_latest(tail)
    return generate_latest(registry) + generate_latest(tail)


def prepare_multiprocess_dir() -> str:
    """Gives the workers an empty metrics dir (the operator's, emptied, or a new temp dir); sets the env."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):
            if name.endswith(".db"):
                os.unlink(os.path.join(path, name))
    else:
        path = tempfile.mkdtemp(prefix="dify-sandbox-metrics-")
        os.environ[MULTIPROC_ENV] = path
    return path


def mark_worker_dead(pid: int) -> None:
    """Drops a dead worker's live gauges."""
    if MULTIPROC_ENV in os.environ:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def remove_multiprocess_dir(path: str) -> None:
    """Deletes a metrics dir the service created itself."""
    shutil.rmtree(path, ignore_errors=True)
