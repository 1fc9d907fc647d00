"""Stopping the server every way an operator does: SIGTERM, Ctrl-C on a terminal (SIGINT to the whole group), twice.

Each test starts its own server with `TMPDIR` pointed at a fresh dir, so what the service leaves in the
temp dir after it stopped can be seen; runs in flight are held by a `sleep <marker>` they start, so the
test knows they are running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from ..polling import wait_for
from .conftest import processes_with_cmdline

pytestmark = pytest.mark.integration

EXIT_TIMEOUT = 20.0


def hold(marker: str) -> str:
    """A snippet that prints, then runs `sleep <marker>` until it is killed."""
    return f'import subprocess\nprint("started", flush=True)\nsubprocess.run(["sleep", "{marker}"])\nprint("done")'


def wait_until_running(marker: str) -> None:
    assert wait_for(lambda: processes_with_cmdline(["sleep", marker]), 10), "the run never started its sleep"


def wait_exit(server) -> int:
    try:
        return server.proc.wait(EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"server did not exit within {EXIT_TIMEOUT:.0f} s")


def log_records(server) -> list[dict]:
    return [json.loads(line) for line in server.stderr_text().splitlines() if line.startswith("{")]


def fresh_tmpdir(tmp_path: Path) -> Path:
    path = tmp_path / "tmpdir"
    path.mkdir()
    return path


def warm_both_runtimes(server) -> None:
    assert server.run_ok('print("py")')["stdout"] == "py\n"
    assert server.run_ok('console.log("js")', language="nodejs")["stdout"] == "js\n"


def hold_in_node(marker: str) -> str:
    """A Node.js snippet that prints, then runs `sleep <marker>` until it is killed."""
    return (
        "const { spawnSync } = require('child_process');\n"
        "console.log('started');\n"
        f"spawnSync('sleep', ['{marker}'], {{ stdio: 'inherit' }});\n"
        "console.log('done');\n"
    )


def hold_in_thread(started: Path) -> str:
    """A snippet for the thread executor (not confined): prints, marks `started`, then waits until interrupted."""
    loop = "while True:\n    time.sleep(0.05)"
    return f'import time\nprint("started", flush=True)\nopen({str(started)!r}, "w").close()\n{loop}'


def executor_of(variant: str) -> str:
    return "thread" if variant == "python3-thread" else "fork"


def start_held_run(server, variant: str, marker: str, tmp_path: Path):
    """Starts a run that waits until it is killed (in the executor `variant` names); returns once it runs."""
    if variant == "python3-thread":
        started = tmp_path / "started"
        in_flight = server.submit_run(hold_in_thread(started))
        assert wait_for(started.exists, 10), "the run never started"
        return in_flight
    if variant == "nodejs":
        in_flight = server.submit_run(hold_in_node(marker), language="nodejs")
    else:
        in_flight = server.submit_run(hold(marker))
    wait_until_running(marker)
    return in_flight


VARIANTS = ["python3-fork", "python3-thread", "nodejs"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_runs_killed_at_the_end_of_the_grace_are_named_so(start_server, sleep_marker, tmp_path, variant):
    """Scenario: a run outlives the shutdown grace (SANDBOX_GRACE_SECONDS=1), in each executor.

    1. Start a run that waits until killed; send SIGTERM once it is running.
    2. The grace ends and the run is killed: the client still gets its result, whose `error` says it
       was killed at shutdown (not a signal that reads like the OOM killer).
    3. The run's log line gives the same reason; the server exits 0.
    """
    server = start_server(
        SANDBOX_GRACE_SECONDS=1,
        SANDBOX_LOG_FORMAT="json",
        SANDBOX_EXECUTOR=executor_of(variant),
        TMPDIR=fresh_tmpdir(tmp_path),
    )
    in_flight = start_held_run(server, variant, sleep_marker, tmp_path)
    os.kill(server.proc.pid, signal.SIGTERM)

    resp = in_flight.result(timeout=EXIT_TIMEOUT)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["code"] == 0, body
    data = body["data"]
    assert data["exit_code"] == -1, data
    assert data["stdout"] == "started\n"
    assert data["error"].startswith("process exited with code -1\nerror: killed at shutdown\n"), data
    assert "SIGKILL" not in data["error"]

    assert wait_exit(server) == 0
    (finished,) = [r for r in log_records(server) if r["event"] == "Run finished"]
    assert finished["exit_reason"] == "killed at shutdown", finished
    assert finished["outcome"] == "killed", finished


@pytest.mark.parametrize("variant", VARIANTS)
def test_second_sigint_answers_in_flight_runs_with_the_error_envelope(start_server, sleep_marker, tmp_path, variant):
    """Scenario: Ctrl-C twice on a terminal (SIGINT to the whole process group) while a run is in flight.

    1. Start a run that sleeps until killed; once it runs, SIGINT the group: the drain starts (/health 503).
    2. SIGINT the group again: the server is forced to exit.
    3. The client gets HTTP 200 with the API's -500 envelope, not a plain-text HTTP 500.
    4. The server exits 130 and leaves nothing in its temp dir.
    """
    tmpdir = fresh_tmpdir(tmp_path)
    server = start_server(SANDBOX_GRACE_SECONDS=60, SANDBOX_EXECUTOR=executor_of(variant), TMPDIR=tmpdir)
    warm_both_runtimes(server)
    in_flight = start_held_run(server, variant, sleep_marker, tmp_path)
    server.descendants()
    os.killpg(server.pgid, signal.SIGINT)
    assert wait_for(lambda: server.health_status() == 503, 10), server.output()
    os.killpg(server.pgid, signal.SIGINT)

    resp = in_flight.result(timeout=EXIT_TIMEOUT)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["code"] == -500, body
    assert body["data"] is None, body
    assert "shutting down" in body["message"], body

    assert wait_exit(server) == 130
    assert not server.wait_no_survivors(), server.output()
    assert os.listdir(tmpdir) == []


def sigint_everything(server) -> None:
    """SIGINT to the server's group and to every process it started, as if all of them shared the terminal."""
    targets = [server.proc.pid, *(proc.pid for proc in server.descendants())]
    os.killpg(server.pgid, signal.SIGINT)
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)


@pytest.mark.parametrize(
    "way",
    [
        "sigterm",
        "sigint_to_the_group",
        "sigint_twice_to_the_group",
        "sigint_to_every_process",
    ],
)
def test_nothing_is_left_in_the_temp_dir(start_server, tmp_path, way):
    """After each way of stopping, with both runtimes used, the temp dir the server was given is empty again."""
    tmpdir = fresh_tmpdir(tmp_path)
    server = start_server(SANDBOX_WORKERS=2, TMPDIR=tmpdir)
    warm_both_runtimes(server)
    assert os.listdir(tmpdir), "the server keeps nothing in the temp dir: this test would prove nothing"
    server.descendants()
    if way == "sigterm":
        os.kill(server.proc.pid, signal.SIGTERM)
    elif way == "sigint_to_every_process":
        sigint_everything(server)
    else:
        os.killpg(server.pgid, signal.SIGINT)
        if way == "sigint_twice_to_the_group":
            assert wait_for(lambda: server.health_status() != 200, 10), server.output()
            os.killpg(server.pgid, signal.SIGINT)
    wait_exit(server)
    assert not server.wait_no_survivors(), server.output()
    assert os.listdir(tmpdir) == []
