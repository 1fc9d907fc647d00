"""Metric definitions, on a fresh registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from dify_sandbox.metrics import SandboxMetrics


def test_record_run_counts_and_observes() -> None:
    """A run is counted by outcome and its duration and wait observed; a rejected one is only counted."""
    registry = CollectorRegistry()
    metrics = SandboxMetrics(registry)
    metrics.record_run("python3", "ok", 0.004, 0.001)
    metrics.record_run("python3", "rejected", None, None)
    assert registry.get_sample_value("dify_sandbox_runs_total", {"language": "python3", "outcome": "ok"}) == 1
    assert registry.get_sample_value("dify_sandbox_runs_total", {"language": "python3", "outcome": "rejected"}) == 1
    assert registry.get_sample_value("dify_sandbox_run_duration_seconds_count", {"language": "python3"}) == 1
    assert registry.get_sample_value("dify_sandbox_queue_wait_seconds_sum", {"language": "python3"}) == 0.001


def test_known_series_exist_at_zero_before_anything_happens() -> None:
    """Every language x outcome, both histograms per language and the restart counters are 0 from the start."""
    registry = CollectorRegistry()
    metrics = SandboxMetrics(registry)
    metrics.start_route_series(["/v1/sandbox/run"])
    for language in ("python3", "nodejs"):
        for outcome in ("ok", "nonzero_exit", "timeout", "output_limit", "killed", "internal_error", "rejected"):
            labels = {"language": language, "outcome": outcome}
            assert registry.get_sample_value("dify_sandbox_runs_total", labels) == 0, labels
        assert registry.get_sample_value("dify_sandbox_run_duration_seconds_count", {"language": language}) == 0
        assert registry.get_sample_value("dify_sandbox_queue_wait_seconds_count", {"language": language}) == 0
    for executor in ("zygote", "node_pool"):
        assert registry.get_sample_value("dify_sandbox_executor_restarts_total", {"executor": executor}) == 0
    labels = {"route": "/v1/sandbox/run", "status": "200"}
    assert registry.get_sample_value("dify_sandbox_http_requests_total", labels) == 0
