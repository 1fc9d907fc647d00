"""What start-up says about unsafe or mistaken settings: refusals (exit code, one stderr line) and warnings.

Each test starts the real server with JSON logs and reads its stderr: a refused start exits with a
named code and one line; a risky but valid setting starts and leaves a warning naming it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.polling import wait_for

from .conftest import Server

pytestmark = pytest.mark.integration

EXIT_CONFIG_ERROR = 78
EXIT_TIMEOUT = 10.0
LOG_WAIT = 5.0


def events(server: Server) -> list[dict[str, Any]]:
    """The server's JSON log lines so far (other stderr lines skipped)."""
    found = []
    for line in server.stderr_text().splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def warnings(server: Server, event: str) -> list[dict[str, Any]]:
    """The warning lines whose event text contains ``event``."""
    return [line for line in events(server) if line["level"] == "warning" and event in line["event"]]


def exit_code(server: Server) -> int:
    try:
        return server.proc.wait(EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server kept running instead of stopping\n{server.output()}")


def only_stderr_line(server: Server) -> str:
    lines = server.stderr_text().strip().splitlines()
    assert len(lines) == 1, server.stderr_text()
    return lines[0]


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --- API_KEY ------------------------------------------------------------------------------------------------------


def test_empty_api_key_in_env_refuses_to_start(start_server):
    """API_KEY="" stops start-up with exit 78 and one line naming API_KEY and the way to allow it."""
    server = start_server(wait=False, API_KEY="")
    assert exit_code(server) == EXIT_CONFIG_ERROR
    line = only_stderr_line(server)
    assert "API_KEY" in line
    assert "SANDBOX_ALLOW_NO_KEY" in line


def test_empty_api_key_in_config_file_refuses_to_start(start_server, tmp_path):
    """`app: {key: ''}` in the config file is refused the same way."""
    config = write_config(tmp_path, "app:\n  key: ''\n")
    server = start_server(wait=False, SANDBOX_CONFIG_FILE=config)
    assert exit_code(server) == EXIT_CONFIG_ERROR
    assert "API_KEY" in only_stderr_line(server)


def test_empty_api_key_allowed_explicitly_starts_with_a_warning(start_server):
    """With SANDBOX_ALLOW_NO_KEY=true an empty key starts, says authentication is off, and runs need no key."""
    server = start_server(API_KEY="", SANDBOX_ALLOW_NO_KEY="true", SANDBOX_LOG_FORMAT="json")
    assert warnings(server, "authentication is off"), server.stderr_text()
    resp = server.run('print("open")', client=server.client(None))
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["stdout"] == "open\n"


# --- the config file ----------------------------------------------------------------------------------------------


def test_missing_config_file_named_in_env_refuses_to_start(start_server, tmp_path):
    """SANDBOX_CONFIG_FILE naming a file that does not exist: exit 78, one line naming the file."""
    missing = tmp_path / "no-such-config.yaml"
    server = start_server(wait=False, SANDBOX_CONFIG_FILE=missing)
    assert exit_code(server) == EXIT_CONFIG_ERROR
    line = only_stderr_line(server)
    assert str(missing) in line
    assert "does not exist" in line


def test_missing_config_file_named_with_flag_refuses_to_start(start_server, tmp_path):
    """`serve --config PATH` with no file at PATH: exit 78, one line naming the file."""
    missing = tmp_path / "typo.yaml"
    server = start_server(wait=False, argv=[sys.executable, "-m", "dify_sandbox", "serve", "--config", str(missing)])
    assert exit_code(server) == EXIT_CONFIG_ERROR
    assert str(missing) in only_stderr_line(server)


def test_missing_default_config_file_is_logged(start_server):
    """Without conf/config.yaml the server starts and says that no file was found and defaults apply."""
    server = start_server(SANDBOX_LOG_FORMAT="json")
    lines = [line for line in events(server) if line["event"].startswith("No config file found")]
    assert len(lines) == 1, server.stderr_text()
    assert lines[0]["path"] == str(server.workdir / "conf" / "config.yaml")


def test_unknown_config_keys_warn_with_the_close_match(start_server, tmp_path):
    """Scenario: typos in the config file are named, one warning each, and start-up goes on.

    1. The file has `max_worker: 4` (for max_workers), `sandbox: {executer: thread, node_pool_sise: 1}`,
       `app: {debugg: true}` and `workers: 2` at the top level (a setting of ours, outside `sandbox:`).
    2. The server starts; the log says which file it read.
    3. One warning per unknown key, with the key it most resembles.
    4. None of them took effect: the executor is still fork (a run has its own pid).
    """
    config = write_config(
        tmp_path,
        "max_worker: 4\napp:\n  debugg: true\nworkers: 2\nsandbox:\n  executer: thread\n  node_pool_sise: 1\n",
    )
    server = start_server(SANDBOX_CONFIG_FILE=config, SANDBOX_LOG_FORMAT="json")
    assert [line["path"] for line in events(server) if line["event"] == "Config file read"] == [str(config)]
    found = {line["key"]: line["did_you_mean"] for line in warnings(server, "Unknown key in the config file")}
    assert found == {
        "max_worker": "max_workers",
        "app.debugg": "app.debug",
        "workers": "sandbox.workers",
        "sandbox.executer": "sandbox.executor",
        "sandbox.node_pool_sise": "sandbox.node_pool_size",
    }, server.stderr_text()
    pid = int(server.run_ok("import os\nprint(os.getpid())")["stdout"])
    assert pid != server.proc.pid


def test_allowed_syscalls_as_names_start_with_no_effect_warning(start_server, tmp_path):
    """`allowed_syscalls: [read, write]` starts, with the same "no effect" warning that numbers get."""
    config = write_config(tmp_path, "allowed_syscalls: [read, write]\n")
    server = start_server(SANDBOX_CONFIG_FILE=config, SANDBOX_LOG_FORMAT="json")
    ignored = [line["setting"] for line in warnings(server, "Setting has no effect here")]
    assert ignored == ["ALLOWED_SYSCALLS"], server.stderr_text()
    assert server.run_ok('print("ok")')["stdout"] == "ok\n"


# --- values that are valid but risky ------------------------------------------------------------------------------


def test_debug_serves_docs_with_a_warning_and_logs_every_request(start_server):
    """DEBUG=true: a start-up warning names /docs, /docs answers, and each request gets an access-log line."""
    server = start_server(DEBUG="true", SANDBOX_LOG_FORMAT="json")
    lines = warnings(server, "DEBUG is on")
    assert len(lines) == 1, server.stderr_text()
    assert "/docs" in lines[0]["event"]
    assert server.http.get("/docs").status_code == 200
    resp = server.http.get("/health", headers={"X-Request-Id": "debug-access-1"})
    assert resp.status_code == 200

    def access_line() -> list[dict[str, Any]]:
        return [
            line
            for line in events(server)
            if line["event"] == "Request handled" and line.get("request_id") == "debug-access-1"
        ]

    handled = wait_for(access_line, LOG_WAIT)
    assert handled, server.stderr_text()
    assert handled[0]["route"] == "/health"
    assert handled[0]["status"] == 200


def test_docs_are_closed_without_debug(server):
    """Without DEBUG, /docs is gin's plain 404 like any unknown route."""
    resp = server.http.get("/docs")
    assert resp.status_code == 404
    assert resp.text == "404 page not found"


def test_official_concurrency_caps_warn_with_the_whole_service_total(start_server, tmp_path):
    """Dify's `max_workers: 4` and `max_requests: 50` with 2 server workers: each warns with the total (8, 100)."""
    config = write_config(tmp_path, "max_workers: 4\nmax_requests: 50\n")
    server = start_server(SANDBOX_CONFIG_FILE=config, SANDBOX_WORKERS=2, SANDBOX_LOG_FORMAT="json")
    lines = {line["setting"]: line for line in warnings(server, "counts per server worker")}
    assert set(lines) == {"MAX_WORKERS", "MAX_REQUESTS"}, server.stderr_text()
    assert lines["MAX_WORKERS"]["per_server_worker"] == 4
    assert lines["MAX_WORKERS"]["server_workers"] == 2
    assert lines["MAX_WORKERS"]["whole_service"] == 8
    assert lines["MAX_REQUESTS"]["whole_service"] == 100
    assert "official defaults throttle runs" in lines["MAX_WORKERS"]["event"]


def test_default_concurrency_caps_do_not_warn(start_server):
    """At our defaults nothing is said about MAX_WORKERS or MAX_REQUESTS."""
    server = start_server(SANDBOX_LOG_FORMAT="json")
    assert not warnings(server, "counts per server worker"), server.stderr_text()


def test_port_in_use_is_one_line_and_a_non_zero_exit(start_server, unused_port):
    """A port another process listens on: the server exits non-zero with one line naming it, no traceback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("0.0.0.0", unused_port))  # the server binds every address, as the default host
        holder.listen()
        server = start_server(wait=False, port=unused_port)
        code = exit_code(server)
    stderr = server.stderr_text()
    assert code != 0
    assert "Traceback" not in stderr
    named = [line for line in stderr.splitlines() if f":{unused_port}" in line and "in use" in line]
    assert len(named) == 1, stderr


# --- refused keys -------------------------------------------------------------------------------------------------


def test_refused_keys_are_logged_once_per_client_address(start_server):
    """Scenario: refused keys leave a warning, at most one per client address per interval, never the key.

    1. From 127.0.0.1: a JSON run with a wrong key (the fast path's kind of request), then a form run
       with no key (the framework's), then a dependencies request with a wrong key.
    2. From 127.0.0.2: a JSON run with a wrong key.
    3. Each is HTTP 401. There is exactly one warning per address, with the address and the request id
       of the first request from it; neither the configured key nor the wrong one is in the log.
    """
    secret, wrong = "secret-7c1e", "wrong-key-93ad"
    server = start_server(API_KEY=secret, SANDBOX_LOG_FORMAT="json")
    body = {"language": "python3", "code": "print(1)", "preload": "", "enable_network": True}
    local = server.client(wrong)
    other = httpx.Client(
        base_url=server.url,
        headers={"X-Api-Key": wrong},
        transport=httpx.HTTPTransport(local_address="127.0.0.2"),
        trust_env=False,
    )
    with other:
        answers = [
            local.post("/v1/sandbox/run", json=body, headers={"X-Request-Id": "refused-json"}),
            server.client(None).post("/v1/sandbox/run", data={"language": "python3", "code": "print(1)"}),
            local.get("/v1/sandbox/dependencies", params={"language": "python3"}),
            other.post("/v1/sandbox/run", json=body, headers={"X-Request-Id": "refused-other"}),
        ]
    assert [resp.status_code for resp in answers] == [401, 401, 401, 401]

    def refusals() -> list[dict[str, Any]]:
        return warnings(server, "Request refused")

    lines = wait_for(lambda: len(refusals()) >= 2 and refusals(), LOG_WAIT)
    assert lines, server.stderr_text()
    assert [(line["client"], line["request_id"], line["reason"]) for line in lines] == [
        ("127.0.0.1", "refused-json", "wrong"),
        ("127.0.0.2", "refused-other", "wrong"),
    ]
    assert all(line["refused_unlogged_since_last"] == 0 for line in lines)
    assert secret not in server.stderr_text()
    assert wrong not in server.stderr_text()


# --- request bodies -----------------------------------------------------------------------------------------------


def test_json_sent_as_a_form_is_told_to_use_json(server):
    """`curl -d '{...}'` (JSON as form-urlencoded): HTTP 400, code -400, a message naming the right Content-Type."""
    document = json.dumps({"language": "python3", "code": "print(1 & 1 == 1)"}).encode()
    resp = server.http.post(
        "/v1/sandbox/run", content=document, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert resp.status_code == 400
    body = resp.json()
    assert body["code"] == -400
    assert body["data"] is None
    assert "Content-Type: application/json" in body["message"]


def test_other_bad_form_bodies_keep_the_field_message(server):
    """A form body that is not JSON keeps the field message (`language: Field required`)."""
    resp = server.http.post(
        "/v1/sandbox/run", content=b"code=print(1)", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert resp.status_code == 400
    assert resp.json() == {"code": -400, "message": "language: Field required", "data": None}
