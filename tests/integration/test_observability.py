"""Metrics summed across server workers, JSON log lines, the request id, and no user code in logs."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

SECRET_MARKER = "marker-7f3a9c-never-logged"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.slow
def test_metrics_and_logs_across_two_workers(start_server) -> None:
    """Scenario: a known mix of runs on 2 workers shows up in /metrics and in JSON logs.

    1. Start 2 workers with JSON logs, MAX_REQUESTS=1 per worker, WORKER_TIMEOUT=1.
    2. Send 6 ok runs, 2 failing runs, 1 timeout, then enough concurrent slow runs that some are rejected.
    3. /metrics (served by whichever worker) counts every run by outcome, summed over both workers.
    4. Every log line is JSON; each run has one "Run finished" line with its fields and request id.
    5. The marker in the code appears in no log line.
    """
    server = start_server(SANDBOX_WORKERS=2, SANDBOX_LOG_FORMAT="json", MAX_REQUESTS=1, WORKER_TIMEOUT=1)
    for i in range(6):
        assert server.run_ok(f"print({i})  # {SECRET_MARKER}")["exit_code"] == 0
    for _ in range(2):
        assert server.run_ok(f"raise SystemExit(2)  # {SECRET_MARKER}")["exit_code"] == 2
    assert server.run_ok("while True: pass")["exit_code"] == -1

    with ThreadPoolExecutor(max_workers=8) as pool:
        clients = [server.client(server.api_key) for _ in range(8)]
        futures = [pool.submit(server.run, "import time\ntime.sleep(0.8)", client=c) for c in clients]
        statuses = [f.result().status_code for f in futures]
    rejected = statuses.count(503)
    admitted = statuses.count(200)
    assert rejected >= 1
    assert rejected + admitted == 8

    samples = _samples(server.http.get("/metrics").text)
    assert _value(samples, "dify_sandbox_runs_total", language="python3", outcome="ok") == 6 + admitted
    assert _value(samples, "dify_sandbox_runs_total", language="python3", outcome="nonzero_exit") == 2
    assert _value(samples, "dify_sandbox_runs_total", language="python3", outcome="timeout") == 1
    assert _value(samples, "dify_sandbox_runs_total", language="python3", outcome="rejected") == rejected
    assert _value(samples, "dify_sandbox_server_workers") == 2
    assert _value(samples, "dify_sandbox_capacity_runs", limit="max_requests") == 2
    assert _value(samples, "dify_sandbox_runs_in_flight") == 0
    assert _value(samples, "dify_sandbox_run_duration_seconds_count", language="python3") == 9 + admitted
    run_200 = _value(samples, "dify_sandbox_http_requests_total", route="/v1/sandbox/run", status="200")
    assert run_200 == 9 + admitted

    server.stop()
    lines = [line for line in server.stderr_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    finished = [r for r in records if r["event"] == "Run finished"]
    assert len(finished) == 9 + admitted
    for record in finished:
        assert {"language", "executor", "outcome", "exit_code", "duration_ms", "queued_ms"} <= set(record)
        assert {"stdout_bytes", "stderr_bytes", "child_pid", "request_id", "timestamp", "level"} <= set(record)
    assert {r["worker"] for r in finished} <= {0, 1}
    timeouts = [r for r in finished if r["outcome"] == "timeout"]
    assert timeouts[0]["exit_reason"] == "killed at timeout"
    assert not [line for line in lines if SECRET_MARKER in line]


def test_request_id_is_echoed_and_logged(start_server) -> None:
    """An incoming X-Request-Id comes back and is on the run's log line; a missing one is generated."""
    server = start_server(SANDBOX_LOG_FORMAT="json")
    body = {"language": "python3", "code": "print(1)"}
    given = server.http.post("/v1/sandbox/run", json=body, headers={"X-Request-Id": "req-42-abc"})
    assert given.headers["x-request-id"] == "req-42-abc"
    generated = server.http.post("/v1/sandbox/run", json=body).headers["x-request-id"]
    assert len(generated) >= 16
    assert generated != "req-42-abc"
    time.sleep(0.2)
    records = [json.loads(line) for line in server.stderr_text().splitlines() if line.startswith("{")]
    ids = {r.get("request_id") for r in records if r["event"] == "Run finished"}
    assert ids == {"req-42-abc", generated}


def test_metrics_open_by_default_and_key_protected_on_request(start_server) -> None:
    """/metrics needs no key by default; with SANDBOX_METRICS_REQUIRE_KEY it answers 401 without one."""
    open_server = start_server()
    assert httpx.get(f"{open_server.url}/metrics", trust_env=False).status_code == 200
    closed = start_server(SANDBOX_METRICS_REQUIRE_KEY="true")
    assert httpx.get(f"{closed.url}/metrics", trust_env=False).status_code == 401
    assert closed.http.get("/metrics").status_code == 200


def test_rewarm_request_id_stays_on_the_lines_it_caused(start_server) -> None:
    """Scenario: dependencies/update re-warms the zygote; only the lines caused by that request carry its id.

    1. POST /v1/sandbox/dependencies/update with X-Request-Id `rewarm-1`: a new zygote starts.
    2. Its start-up lines (up to "Zygote ready") carry `rewarm-1`.
    3. A later run (its own id) and the new zygote's lines after its start (its "Zygote stopped" at
       shutdown) do not.
    """
    server = start_server(SANDBOX_LOG_FORMAT="json")
    resp = server.http.post(
        "/v1/sandbox/dependencies/update", json={"language": "python3"}, headers={"X-Request-Id": "rewarm-1"}
    )
    assert resp.json() == {"code": 0, "message": "success", "data": {}}
    later = {"language": "python3", "code": "print(1)"}
    assert server.http.post("/v1/sandbox/run", json=later, headers={"X-Request-Id": "run-2"}).json()["code"] == 0
    assert server.terminate() == 0

    records = [json.loads(line) for line in server.stderr_text().splitlines() if line.startswith("{")]
    ready = [r for r in records if r["event"] == "Zygote ready"]
    assert len(ready) == 2, ready  # the first zygote's, then the re-warmed one's
    fresh_pid = ready[1]["zygote_pid"]
    assert ready[1].get("request_id") == "rewarm-1"
    (stopped,) = [r for r in records if r["event"] == "Zygote stopped" and r["zygote_pid"] == fresh_pid]
    assert "request_id" not in stopped, stopped
    (finished,) = [r for r in records if r["event"] == "Run finished"]
    assert finished["request_id"] == "run-2"


def test_known_series_are_scraped_at_zero_from_a_fresh_server(start_server) -> None:
    """Before any run, /metrics (two workers, multi-process mode) has every known labelled series at 0."""
    server = start_server(SANDBOX_WORKERS=2)
    samples = _samples(httpx.get(f"{server.url}/metrics", trust_env=False).text)

    def present(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    for language in ("python3", "nodejs"):
        for outcome in ("ok", "nonzero_exit", "timeout", "output_limit", "killed", "internal_error", "rejected"):
            assert present("dify_sandbox_runs_total", language=language, outcome=outcome) == 0, (language, outcome)
        assert present("dify_sandbox_run_duration_seconds_count", language=language) == 0
        assert present("dify_sandbox_queue_wait_seconds_count", language=language) == 0
    for executor in ("zygote", "node_pool"):
        assert present("dify_sandbox_executor_restarts_total", executor=executor) == 0
    assert present("dify_sandbox_http_requests_total", route="/v1/sandbox/run", status="200") == 0
    assert present("dify_sandbox_capacity_runs", limit="max_workers") is not None
