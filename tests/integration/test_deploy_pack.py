"""The deployment pack (deploy/) against the real service: what its queries select exists, and the
compose drop-in puts this service and its defaults in place of Dify's.

The PromQL expressions come from scripts/validate_deploy.py (dashboard, alert rules, KEDA trigger,
prometheus-adapter rules), the same list that scripts/validate-manifests parses.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import get_args

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dify_sandbox.config import load_settings
from dify_sandbox.metrics import Outcome
from dify_sandbox.server import STOP_MARGIN
from tests.polling import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DROP_IN = ROOT / "deploy" / "compose" / "docker-compose.override.yaml"
# The parts of the `sandbox` service of Dify's docker/docker-compose.yaml that the drop-in must win over.
DIFY_COMPOSE = """\
services:
  sandbox:
    image: langgenius/dify-sandbox:0.2.15
    restart: always
    environment:
      API_KEY: ${SANDBOX_API_KEY:-dify-sandbox}
      GIN_MODE: ${SANDBOX_GIN_MODE:-release}
      WORKER_TIMEOUT: ${SANDBOX_WORKER_TIMEOUT:-15}
      ENABLE_NETWORK: ${SANDBOX_ENABLE_NETWORK:-true}
      HTTP_PROXY: ${SANDBOX_HTTP_PROXY:-http://ssrf_proxy:3128}
      HTTPS_PROXY: ${SANDBOX_HTTPS_PROXY:-http://ssrf_proxy:3128}
      SANDBOX_PORT: ${SANDBOX_PORT:-8194}
      PIP_MIRROR_URL: ${PIP_MIRROR_URL:-}
    volumes:
      - ./volumes/sandbox/dependencies:/dependencies
      - ./volumes/sandbox/conf:/conf
    healthcheck:
      test: ['CMD', 'curl', '-f', 'http://localhost:8194/health']
    networks:
      - ssrf_proxy_network
networks:
  ssrf_proxy_network:
    driver: bridge
    internal: true
"""
# Dify's volumes/sandbox/conf/config.yaml, as far as concurrency goes.
DIFY_CONFIG = "app:\n  port: 8194\nmax_workers: 4\nmax_requests: 50\nworker_timeout: 15\n"
_DURATION = re.compile(r"^(?:(\d+)m)?(?:(\d+)s)?$")


def _validator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("validate_deploy", ROOT / "scripts" / "validate_deploy.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _series_labels(text: str) -> dict[str, dict[str, set[str]]]:
    """Sample name -> label name -> the values seen, from an exposition text."""
    seen: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = seen.setdefault(sample.name, {})
            for name, value in sample.labels.items():
                labels.setdefault(name, set()).add(value)
    return seen


def _compose_config(project: Path) -> dict:
    """`docker-compose config` of the directory, as Compose would run it there (no `-f`)."""
    compose = shutil.which("docker-compose", path=str(Path(sys.executable).parent)) or shutil.which("docker-compose")
    assert compose, "docker-compose not installed (the dev dependencies of pyproject.toml)"
    result = subprocess.run(
        [compose, "config", "--format", "json"],
        cwd=project,
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _seconds(duration: str) -> int:
    match = _DURATION.match(duration)
    assert match, f"unexpected duration {duration!r}"
    assert duration, "empty duration"
    return int(match[1] or 0) * 60 + int(match[2] or 0)


def test_every_series_the_pack_queries_exists(start_server) -> None:
    """Scenario: the dashboard, alerts and autoscalers select series that the service exports.

    1. Start the server; make a successful, a failing and a timed-out run in python3 and in nodejs.
    2. Kill the zygote, so that the service restarts it, and wait until /metrics counts the restart.
    3. Every metric a query names is exported, with every label the query matches or groups on
       (besides the labels Prometheus adds to a target), and every exact label value it asks for is
       one the service exports or an outcome or status it can export.
    """
    validate_deploy = _validator()
    queries = validate_deploy.pack_queries()
    assert len(queries) > 20
    server = start_server(WORKER_TIMEOUT=1)
    for language, ok, failing, endless in (
        ("python3", "print(1)", "raise SystemExit(3)", "while True: pass"),
        ("nodejs", "console.log(1)", "process.exit(3)", "while (true) {}"),
    ):
        assert server.run_ok(ok, language=language)["exit_code"] == 0
        assert server.run_ok(failing, language=language)["exit_code"] == 3
        assert server.run_ok(endless, language=language)["exit_code"] != 0
    (zygote,) = server.zygotes()
    zygote.kill()

    def restart_counted() -> str:
        text = server.http.get("/metrics").text
        return text if 'dify_sandbox_executor_restarts_total{executor="zygote"}' in text else ""

    metrics = wait_for(restart_counted, timeout=20)
    assert metrics, "the zygote's restart was never counted"

    exported = _series_labels(metrics)
    target_labels = validate_deploy.TARGET_LABELS
    problems = []
    for query in queries:
        query_labels = set(target_labels)
        for selector in query.selectors:
            labels = exported.get(selector.metric)
            if labels is None:
                problems.append(f"{query.source}: {selector.metric} is not exported")
                continue
            query_labels |= set(labels)
            if missing := selector.labels - target_labels - set(labels):
                problems.append(f"{query.source}: {selector.metric} has no label {sorted(missing)}")
            for name, value in selector.equals:
                if name in target_labels:
                    continue
                possible = labels.get(name, set())
                if name == "outcome":
                    possible |= set(get_args(Outcome))
                if value not in possible and not (name == "status" and re.fullmatch(r"[1-5]\d\d", value)):
                    problems.append(f"{query.source}: {selector.metric}{{{name}={value!r}}} cannot be exported")
        if unknown := query.grouping - query_labels:
            problems.append(f"{query.source}: groups by {sorted(unknown)}, which its series do not have")
    assert not problems, "\n".join(problems)


def test_compose_drop_in_replaces_difys_sandbox(tmp_path, start_server) -> None:
    """Scenario: copied next to Dify's compose file, the drop-in wins without `-f`, and its environment
    wins over Dify's mounted config.yaml.

    1. Lay out Dify's docker/ directory: its compose file, conf/config.yaml (max_workers: 4), and the drop-in.
    2. `docker-compose config` there: the sandbox runs this image, with MAX_WORKERS=500 and MAX_REQUESTS=1000,
       and a stop grace period longer than the drain plus the supervisor's stop margin.
    3. Start the real server with that environment and that config file: its capacity is 500 runs, not 4.
    """
    (tmp_path / "docker-compose.yaml").write_text(DIFY_COMPOSE)
    shutil.copy(DROP_IN, tmp_path / "docker-compose.override.yaml")
    conf = tmp_path / "volumes" / "sandbox" / "conf"
    conf.mkdir(parents=True)
    (conf / "config.yaml").write_text(DIFY_CONFIG)

    sandbox = _compose_config(tmp_path)["services"]["sandbox"]
    assert not sandbox["image"].startswith("langgenius/"), sandbox["image"]
    environment = sandbox["environment"]
    assert (environment["MAX_WORKERS"], environment["MAX_REQUESTS"]) == ("500", "1000")
    grace = load_settings(worker_timeout=float(environment["WORKER_TIMEOUT"])).grace
    assert _seconds(sandbox["stop_grace_period"]) > grace + STOP_MARGIN

    server = start_server(
        MAX_WORKERS=environment["MAX_WORKERS"],
        MAX_REQUESTS=environment["MAX_REQUESTS"],
        WORKER_TIMEOUT=environment["WORKER_TIMEOUT"],
        SANDBOX_CONFIG_FILE=conf / "config.yaml",
    )
    text = server.http.get("/metrics").text
    assert 'dify_sandbox_capacity_runs{limit="max_workers"} 500.0' in text
    assert 'dify_sandbox_capacity_runs{limit="max_requests"} 1000.0' in text
