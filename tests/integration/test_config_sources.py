"""Where the server's configuration comes from: env with the official names, the YAML file, and bad values."""

from __future__ import annotations

import subprocess
import time

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("name", "value"),
    [("MAX_WORKERS", "abc"), ("MAX_REQUESTS", "many"), ("WORKER_TIMEOUT", "soon"), ("ENABLE_NETWORK", "maybe")],
)
def test_invalid_env_value_fails_fast(start_server, name, value):
    """An invalid setting makes the process exit non-zero within 10 s with one stderr line naming the variable."""
    server = start_server(wait=False, **{name: value})
    try:
        returncode = server.proc.wait(10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name}={value!r}: the server kept running instead of failing fast")
    stderr = server.stderr_text()
    assert returncode != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert name in lines[0], stderr


def test_yaml_config_file_is_honoured(start_server, tmp_path, unused_port):
    """Scenario: the official YAML layout, with only some keys set, configures the server.

    1. Write `app: {port: P, key: k2}` and `max_workers: 4` to a file named by SANDBOX_CONFIG_FILE;
       leave SANDBOX_PORT and API_KEY unset.
    2. The server listens on P, and a run with key k2 succeeds (keys left out, such as max_requests,
       get sane defaults rather than 0).
    3. The default key dify-sandbox is refused with 401.
    """
    config = tmp_path / "config.yaml"
    config.write_text(f"app:\n  port: {unused_port}\n  key: k2\nmax_workers: 4\n")
    server = start_server(port=unused_port, set_port=False, api_key="k2", SANDBOX_CONFIG_FILE=config)
    assert server.run_ok('print("from yaml")')["stdout"] == "from yaml\n"
    resp = server.run('print("x")', client=server.client("dify-sandbox"))
    assert resp.status_code == 401
    assert resp.content == b""


def test_env_overrides_yaml(start_server, tmp_path, unused_port):
    """Scenario: env wins over the file, and file keys without an env override still apply.

    1. The file sets port P, key k2 and enable_network false; env sets API_KEY=k3.
    2. Key k3 works and k2 is refused.
    3. enable_network=true is refused as disabled (from the file).
    """
    config = tmp_path / "config.yaml"
    config.write_text(f"app:\n  port: {unused_port}\n  key: k2\nenable_network: false\n")
    server = start_server(port=unused_port, set_port=False, SANDBOX_CONFIG_FILE=config, API_KEY="k3")
    assert server.run_ok('print("k3")', enable_network=False)["stdout"] == "k3\n"
    assert server.run('print("x")', enable_network=False, client=server.client("k2")).status_code == 401
    resp = server.run('print("x")', enable_network=True)
    assert resp.status_code == 200
    assert resp.json()["code"] == -400


def test_worker_timeout_accepts_seconds_suffix(start_server):
    """WORKER_TIMEOUT=1s means one second (the official Atoi would have read 0 and used 5 s)."""
    server = start_server(WORKER_TIMEOUT="1s")
    start = time.monotonic()
    data = server.run_ok("import time\ntime.sleep(10)", timeout=10)
    elapsed = time.monotonic() - start
    assert data["exit_code"] == -1, data
    assert "error: timeout" in data["error"], data
    assert elapsed < 3.0, f"took {elapsed:.2f} s"


def test_output_limit_stops_a_flood(start_server):
    """SANDBOX_OUTPUT_LIMIT_BYTES: a run flooding stdout is stopped early (not at the time limit) and capped."""
    limit = 100_000
    server = start_server(SANDBOX_OUTPUT_LIMIT_BYTES=limit, WORKER_TIMEOUT=10)
    under = server.run_ok(f'print("a" * {limit // 2})')
    assert under["stdout"] == "a" * (limit // 2) + "\n"
    start = time.monotonic()
    data = server.run_ok('while True:\n    print("x" * 1000)', timeout=15)
    elapsed = time.monotonic() - start
    assert elapsed < 5.0, f"took {elapsed:.2f} s: the flood ran into the time limit"
    assert data["exit_code"] == -1, {**data, "stdout": data["stdout"][:100]}
    assert len(data["stdout"].encode()) <= limit
    assert data["error"].strip(), {**data, "stdout": data["stdout"][:100]}
    assert "timeout" not in data["error"], data["error"]
    assert server.run_ok('print("next")')["stdout"] == "next\n"
