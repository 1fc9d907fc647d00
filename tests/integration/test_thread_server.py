"""A real server with SANDBOX_EXECUTOR=thread (trusted code, run in the worker's threads): same answers as fork.

The snippets here would end or pollute the worker if the executor got it wrong: SystemExit, warnings,
logging, the environment, many threads writing at once, and a busy loop that must be stopped.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from .conftest import attach

pytestmark = pytest.mark.integration

THREAD_API_KEY = "secret-xyz"


@pytest.fixture(scope="module")
def _thread_server(session_server_factory):
    server = session_server_factory("thread-server", SANDBOX_EXECUTOR="thread", API_KEY=THREAD_API_KEY)
    yield server
    server.stop()


@pytest.fixture
def thread_server(request, _thread_server):
    """A shared server with the thread executor and API_KEY=secret-xyz; fails fast if it died."""
    attach(request.node, _thread_server)
    if _thread_server.proc.poll() is not None:
        pytest.fail(f"the thread server has exited\n{_thread_server.output()}")
    return _thread_server


def worker_of(server) -> psutil.Process:
    """The server worker: the supervisor's child started by multiprocessing spawn (not its resource tracker)."""
    children = [
        child
        for child in psutil.Process(server.proc.pid).children()
        if "multiprocessing.spawn" in " ".join(child.cmdline())
    ]
    assert len(children) == 1, [(child.pid, child.cmdline()) for child in children]
    return children[0]


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def test_snippets_run_inside_the_worker(thread_server):
    """The thread executor is really in use: a snippet's os.getpid() is the server worker's pid."""
    data = thread_server.run_ok("import os\nprint(os.getpid())")
    assert int(data["stdout"]) == worker_of(thread_server).pid


def test_sys_exit_ends_only_the_run(thread_server):
    """sys.exit(3) gives exit 3 and its error line; the same worker keeps serving."""
    worker = worker_of(thread_server)
    data = thread_server.run_ok("import sys\nprint('bye')\nsys.exit(3)")
    assert (data["stdout"], data["exit_code"]) == ("bye\n", 3)
    assert data["error"].startswith("process exited with code 3")
    assert thread_server.run_ok("print('still serving')")["stdout"] == "still serving\n"
    assert thread_server.proc.poll() is None
    assert worker_of(thread_server).pid == worker.pid, "the worker was replaced"


def test_warning_goes_to_stderr_without_error(thread_server):
    """warnings.warn lands on stderr with error "" and exit 0, in every run (not only the first)."""
    for _ in range(2):
        data = thread_server.run_ok("import warnings\nwarnings.warn('careful')\nprint('done')")
        assert "careful" in data["stderr"]
        assert "UserWarning" in data["stderr"]
        assert (data["stdout"], data["error"], data["exit_code"]) == ("done\n", "", 0)


def test_logging_goes_to_the_runs_stderr(thread_server):
    """logging.basicConfig + logging.info writes to the run's stderr, not the server's log."""
    marker = f"hi-{time.monotonic_ns()}"
    data = thread_server.run_ok(f'import logging\nlogging.basicConfig(level=logging.INFO)\nlogging.info("{marker}")')
    assert marker in data["stderr"]
    assert (data["error"], data["exit_code"]) == ("", 0)
    assert marker not in thread_server.stderr_text() + thread_server.stdout_text()


def test_fifty_concurrent_runs_never_mix(thread_server):
    """Fifty runs in flight at once, each printing its own marker 2,000 times, get exactly their own output.

    (The executor suite does 10,000 each in-process; through a server measured by coverage, which
    traces every routed write, 2,000 keeps the test fast.)
    """
    template = "for _ in range(2000):\n    print('m{n}')"

    def one(n: int) -> httpx.Response:
        client = thread_server.client(thread_server.api_key, timeout=60)
        return thread_server.run(template.format(n=n), client=client, timeout=60)

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(one, range(50)))
    for n, resp in enumerate(responses):
        assert resp.status_code == 200, resp.text[:500]
        data = resp.json()["data"]
        assert data["stdout"] == f"m{n}\n" * 2000, f"run {n} got foreign or missing output"
        assert (data["error"], data["exit_code"]) == ("", 0)


def test_environment_has_no_api_key(thread_server):
    """A snippet printing dict(os.environ) in the server's own process does not see the API key."""
    data = thread_server.run_ok("import os, json\nprint(json.dumps(dict(os.environ)))")
    assert data["exit_code"] == 0, data
    env = json.loads(data["stdout"])
    assert env, "the snippet saw an empty environment"
    assert THREAD_API_KEY not in data["stdout"]
    assert "API_KEY" not in env


@pytest.mark.slow
def test_timed_out_busy_loop_is_stopped(start_server):
    """Scenario: a `while True: pass` run on a WORKER_TIMEOUT=1 thread server.

    1. The response comes within ~3 s with exit -1 and "error: timeout".
    2. One second later the server worker burns < 0.3 s of CPU per second (the thread was stopped).
    3. The worker still serves.
    """
    server = start_server(SANDBOX_EXECUTOR="thread", WORKER_TIMEOUT=1)
    worker = worker_of(server)
    started = time.monotonic()
    data = server.run_ok("while True:\n    pass", timeout=10)
    elapsed = time.monotonic() - started
    assert elapsed < 3, f"answered after {elapsed:.1f} s"
    assert data["exit_code"] == -1, data
    assert "error: timeout" in data["error"], data

    time.sleep(1.0)
    before = cpu_seconds(worker)
    time.sleep(1.0)
    used = cpu_seconds(worker) - before
    assert used < 0.3, f"the worker used {used:.2f} s of CPU in 1 s after the timeout"
    assert server.run_ok("print('alive')")["stdout"] == "alive\n"
    assert worker_of(server).pid == worker.pid


def test_binary_stream_writes_stay_in_the_run(thread_server):
    """Bytes written to sys.stdout.buffer and sys.stderr.buffer come back in the result, not in the server's output."""
    marker = "buffer-marker-5c1e"
    code = f'import sys\nsys.stdout.buffer.write(b"{marker} out\\n")\nsys.stderr.buffer.write(b"{marker} err\\n")'
    data = thread_server.run_ok(code)
    assert data["stdout"] == f"{marker} out\n"
    assert data["stderr"] == f"{marker} err\n"
    assert data["exit_code"] == 0
    assert thread_server.run_ok("print('after')")["stdout"] == "after\n"  # a later line of the server is written
    assert marker not in thread_server.stdout_text() + thread_server.stderr_text()
