"""Process lifecycle: a killed zygote is replaced, and SIGTERM drains in-flight runs and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest

from ..polling import wait_for

pytestmark = pytest.mark.integration


def describe(procs: list[psutil.Process]) -> list[tuple[int, str]]:
    out = []
    for proc in procs:
        try:
            out.append((proc.pid, " ".join(proc.cmdline())))
        except psutil.Error as exc:
            out.append((proc.pid, repr(exc)))
    return out


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_killed_zygote_is_replaced(start_server):
    """Scenario: SIGKILL the zygote while a run is in flight.

    1. Warm the server up and find its zygote (the worker's child whose cmdline names the zygote module).
    2. Start a `time.sleep(3)` run and wait until its forked child exists.
    3. SIGKILL the zygote: the in-flight run answers HTTP 200 with code -500 and a message naming the zygote.
    4. Within ~5 s a new run succeeds, served by a new zygote.
    """
    server = start_server()
    assert server.run_ok('print("warm")')["stdout"] == "warm\n"
    zygotes = server.zygotes()
    assert len(zygotes) == 1, describe(server.descendants())
    zygote = zygotes[0]

    in_flight = server.submit_run('import time\ntime.sleep(3)\nprint("finished")', timeout=15)
    assert wait_for(lambda: zygote.children(), 3), "the run's child never appeared under the zygote"
    zygote.send_signal(signal.SIGKILL)

    resp = in_flight.result(timeout=15)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["code"] == -500, body
    assert body["data"] is None, body
    assert "zygote" in body["message"].lower(), body

    deadline = time.monotonic() + 5
    while True:
        resp = server.run('print("recovered")', timeout=5)
        if resp.status_code == 200 and resp.json()["code"] == 0:
            break
        assert time.monotonic() < deadline, f"no successful run within 5 s of the zygote's death: {resp.text}"
        time.sleep(0.2)
    assert resp.json()["data"]["stdout"] == "recovered\n"
    new_zygotes = server.zygotes()
    assert len(new_zygotes) == 1, describe(server.descendants())
    assert new_zygotes[0].pid != zygote.pid


@pytest.mark.slow
def test_sigterm_drains_in_flight_run(start_server):
    """Scenario: graceful shutdown with SANDBOX_GRACE_SECONDS=10.

    1. Start a run of `time.sleep(2); print("done")` and record every process of the server.
    2. After 0.5 s send SIGTERM to the server's main process.
    3. While the run is in flight, /health answers 503.
    4. The run completes normally with stdout "done\\n".
    5. The server exits 0 within a few seconds of that.
    6. No process of the server survives: no descendant seen before, nothing in its session, no zygote.
    """
    server = start_server(SANDBOX_GRACE_SECONDS=10)
    assert server.run_ok('print("warm")')["stdout"] == "warm\n"
    zygotes = server.zygotes()
    assert zygotes, describe(server.descendants())

    in_flight = server.submit_run('import time\ntime.sleep(2)\nprint("done")', timeout=15)
    time.sleep(0.5)
    server.descendants()  # remember the run's processes too
    os.kill(server.proc.pid, signal.SIGTERM)

    statuses = []
    while not in_flight.done():
        statuses.append(server.health_status(timeout=0.5))
        if statuses[-1] == 503:
            break
        time.sleep(0.05)
    assert 503 in statuses, f"/health during the drain answered {statuses}"

    resp = in_flight.result(timeout=15)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "code": 0,
        "message": "success",
        "data": {"stdout": "done\n", "stderr": "", "error": "", "exit_code": 0},
    }

    try:
        returncode = server.proc.wait(5)
    except subprocess.TimeoutExpired:
        pytest.fail("server did not exit within 5 s of finishing the drain")
    assert returncode == 0
    left = server.wait_no_survivors()
    assert not left, describe(left)
    assert not [z for z in zygotes if alive(z)], describe(zygotes)


def test_starts_quickly_and_stops_promptly_when_idle(start_server):
    """The server is ready within 5 s; idle, it exits 0 within 3 s of SIGTERM and leaves no process behind."""
    server = start_server()
    assert server.ready_seconds is not None
    assert server.ready_seconds < 5.0, f"ready after {server.ready_seconds:.2f} s"
    assert server.run_ok('print("warm")')["stdout"] == "warm\n"
    server.descendants()
    start = time.monotonic()
    assert server.terminate() == 0
    assert time.monotonic() - start < 3.0
    left = server.wait_no_survivors()
    assert not left, describe(left)


def test_stopped_worker_is_replaced(start_server):
    """Scenario: a worker stops running (SIGSTOP, as a wedged event loop would) with SANDBOX_HEARTBEAT_SECONDS=1.

    1. Find the only server worker (the supervisor's child that is not the resource tracker).
    2. SIGSTOP it: within a few seconds the supervisor kills it and starts another worker.
    3. The new worker answers runs; the supervisor logged why it replaced the old one.
    """
    server = start_server(SANDBOX_HEARTBEAT_SECONDS=1)
    assert server.run_ok('print("warm")')["stdout"] == "warm\n"

    def workers() -> list[psutil.Process]:
        return [
            child
            for child in psutil.Process(server.proc.pid).children()
            if "resource_tracker" not in " ".join(child.cmdline())
        ]

    (worker,) = workers()
    worker.send_signal(signal.SIGSTOP)
    try:
        assert wait_for(lambda: not alive(worker), 10), "the stopped worker was not killed"
    finally:
        if alive(worker):
            worker.send_signal(signal.SIGCONT)
    assert wait_for(lambda: server.health_status() == 200, 15), server.output()
    assert server.run_ok('print("again")')["stdout"] == "again\n"
    (replacement,) = workers()
    assert replacement.pid != worker.pid
    assert "Worker stopped answering; replacing it" in server.stderr_text()
