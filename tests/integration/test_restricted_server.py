"""A server configured the strict way: network disabled, preload enabled, a secret API key, a 1 s time limit."""

from __future__ import annotations

import time

import psutil
import pytest

pytestmark = pytest.mark.integration

SECRET = "secret-xyz"  # the restricted server's API_KEY (conftest RESTRICTED_API_KEY)
NETWORK_DISABLED = {
    "code": -400,
    "message": "network is disabled, please enable it in the configuration",
    "data": None,
}


def test_network_request_refused_when_disabled(restricted_server):
    """enable_network=true on a server with ENABLE_NETWORK=false is HTTP 200 with the exact -400 envelope."""
    resp = restricted_server.run('print("should not run")', enable_network=True)
    assert resp.status_code == 200, resp.text
    assert resp.json() == NETWORK_DISABLED


def test_run_without_network_still_works_when_disabled(restricted_server):
    """enable_network=false runs normally on a server with the network disabled."""
    data = restricted_server.run_ok('print("offline ok")', enable_network=False)
    assert data == {"stdout": "offline ok\n", "stderr": "", "error": "", "exit_code": 0}


def test_preload_runs_when_enabled(restricted_server):
    """With ENABLE_PRELOAD=true the preload runs before the code, in the same namespace."""
    data = restricted_server.run_ok("print(x + 1)", preload="x = 41", enable_network=False)
    assert data == {"stdout": "42\n", "stderr": "", "error": "", "exit_code": 0}


def test_api_key_not_visible_in_environment(restricted_server):
    """The server's API_KEY is not in the run's os.environ (neither by name nor as any value)."""
    data = restricted_server.run_ok(
        'import os\nprint(os.environ.get("API_KEY"))\nprint(dict(os.environ))', enable_network=False
    )
    assert data["exit_code"] == 0, data
    assert data["stdout"].startswith("None\n"), data
    assert SECRET not in data["stdout"]
    assert SECRET not in data["stderr"]


def test_api_key_not_in_initial_process_environment(restricted_server):
    """/proc/self/environ (the environment the process image started with) does not hold the API key either.

    A forked child inherits the zygote's initial environment block even after os.environ is cleared.
    """
    data = restricted_server.run_ok(
        'print(open("/proc/self/environ", "rb").read().decode(errors="replace"))', enable_network=False
    )
    assert data["exit_code"] == 0, data
    assert SECRET not in data["stdout"]


def test_timeout_kills_run_and_keeps_output(restricted_server):
    """WORKER_TIMEOUT=1: a sleeping run is killed (exit -1, "error: timeout") within ~3 s, keeping its output."""
    start = time.monotonic()
    data = restricted_server.run_ok(
        'print("before", flush=True)\nimport time\ntime.sleep(10)', enable_network=False, timeout=10
    )
    elapsed = time.monotonic() - start
    assert elapsed < 3.0, f"took {elapsed:.2f} s"
    assert data["exit_code"] == -1, data
    assert "error: timeout" in data["error"], data
    assert "before" in data["stdout"], data
    assert restricted_server.run_ok('print("next")', enable_network=False)["stdout"] == "next\n"


def test_timeout_kills_grandchildren(restricted_server, sleep_marker):
    """Scenario: a timed-out run leaves no process behind.

    1. The run starts a grandchild `sleep <marker>` (printing its pid) and then sleeps past the limit.
    2. The response arrives within ~3 s, marked as a timeout, with the grandchild's pid in stdout.
    3. Shortly after, no `sleep <marker>` process exists any more.
    """
    code = (
        "import subprocess, time\n"
        f'p = subprocess.Popen(["sleep", "{sleep_marker}"])\n'
        'print("grandchild", p.pid, flush=True)\n'
        "time.sleep(10)\n"
    )
    start = time.monotonic()
    data = restricted_server.run_ok(code, enable_network=False, timeout=10)
    elapsed = time.monotonic() - start
    assert data["stdout"].startswith("grandchild "), data  # the grandchild really was started
    assert data["exit_code"] == -1, data
    assert "error: timeout" in data["error"], data
    assert elapsed < 3.0, f"took {elapsed:.2f} s (a grandchild holding the pipes open?)"
    deadline = time.monotonic() + 1.0
    left = processes_with_marker(sleep_marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = processes_with_marker(sleep_marker)
    assert not left, f"grandchild survived the timeout: {left}"


def processes_with_marker(marker: str) -> list[int]:
    """Pids of live `sleep <marker>` processes."""
    pids = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["cmdline"] == ["sleep", marker] and proc.info["status"] != psutil.STATUS_ZOMBIE:
            pids.append(proc.pid)
    return pids
