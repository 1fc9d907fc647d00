"""What only the thread executor has to prove: unmixed capture under concurrency and stopping runaway threads."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from dify_sandbox.executors.outcome import Cause
from dify_sandbox.executors.thread.executor import ThreadExecutor

from .conftest import Harness


@pytest.fixture(scope="module")
def threads() -> Iterator[Harness]:
    harness = Harness("thread", max_stuck_threads=0)
    yield harness
    harness.close()


def test_fifty_concurrent_runs_never_mix(threads: Harness) -> None:
    """Fifty runs printing their own marker 10,000 times each get exactly their own output."""
    template = (
        "import sys\nfor i in range(10000):\n    print('m{n}')\n"
        "    if i % 500 == 0:\n        sys.stderr.write('e{n}\\n')"
    )
    codes = [template.format(n=n) for n in range(50)]
    results = threads.gather(codes, timeout=60)
    for n, result in enumerate(results):
        assert result.stdout == f"m{n}\n" * 10000
        assert result.stderr == f"e{n}\n" * 20


def test_snippet_log_handlers_write_to_the_run(threads: Harness) -> None:
    """A log handler the snippet creates writes to its own stderr, not the server's.

    (Warnings are checked against a real server: pytest records them process-wide here.)
    """
    code = (
        "import logging\n"
        "log = logging.getLogger('snippet')\nlog.addHandler(logging.StreamHandler())\nlog.propagate = False\n"
        "log.warning('from handler')\n"
    )
    result = threads.run(code)
    assert result.stderr == "from handler\n"
    assert result.error == ""


def test_server_streams_pass_through_outside_runs(threads: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    """Outside a run, the routed stdout still reaches the real one."""
    threads.run("print('inside')")
    print("outside")
    logging.getLogger("dify_sandbox.test").warning("server line")
    out = capsys.readouterr().out  # a second call would return only what was written since this one
    assert "outside" in out
    assert "inside" not in out


def test_timed_out_busy_loop_stops_burning_cpu(threads: Harness) -> None:
    """1. A `while True: pass` run times out at 1 s. 2. A second later the process uses no more CPU for it."""
    result = threads.run("while True:\n    pass", timeout=1)
    assert result.outcome.cause is Cause.TIMEOUT
    assert "error: timeout" in result.error
    time.sleep(1.0)
    process = psutil.Process()
    before = sum(process.cpu_times()[:2])
    time.sleep(1.0)
    used = sum(process.cpu_times()[:2]) - before
    assert used < 0.3, f"{used:.2f} s of CPU in 1 s after the timeout"


def test_run_that_timed_out_waiting_for_a_thread_never_starts(tmp_path: Path) -> None:
    """1. One thread, busy in C code (sleep) past its timeout. 2. A second run waits for that thread
    and times out too. 3. When the thread frees up, the second snippet must not run late."""
    marker = tmp_path / "ran-late"
    harness = Harness("thread", max_workers=1)
    try:
        # Under coverage the harness only hears back once the sleep returns: it must end within the
        # harness's wait (four times the runs' timeout).
        codes = ["import time\ntime.sleep(1.2)", f"open({str(marker)!r}, 'w').write('x')"]
        results = harness.gather(codes, timeout=0.5)
        assert all(result.outcome.cause is Cause.TIMEOUT for result in results)
        time.sleep(2.0)
        assert not marker.exists()
        assert harness.run("print('next')").stdout == "next\n"
    finally:
        harness.close()


def test_uncatchable_by_except_exception(threads: Harness) -> None:
    """A snippet that swallows Exception in its loop is still stopped."""
    code = "while True:\n    try:\n        sum(range(1000))\n    except Exception:\n        pass"
    assert threads.run(code, timeout=0.5).outcome.cause is Cause.TIMEOUT
    executor = threads.executor
    assert isinstance(executor, ThreadExecutor)
    deadline = time.monotonic() + 3
    while executor.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert executor.running == 0


STUCK_SCENARIO = """
import asyncio, time
from dify_sandbox.config import load_settings
from dify_sandbox.executors.base import RunRequest
from dify_sandbox.executors.outcome import Cause
from dify_sandbox.executors.thread.executor import ThreadExecutor

async def main():
    executor = ThreadExecutor(load_settings(executor="thread", max_stuck_threads=0))
    await executor.start()
    result = await executor.run(RunRequest("python3", "import time\\ntime.sleep(8)", "", True, 1.0))
    deadline = time.monotonic() + 10
    while not executor.unhealthy and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    print(result.outcome.cause is Cause.TIMEOUT, executor.unhealthy, executor.stuck)

asyncio.run(main())
"""


@pytest.mark.slow
def test_stuck_thread_marks_the_worker_unhealthy() -> None:
    """A thread blocked in C past the stuck limit is counted and makes the executor unhealthy.

    Runs in its own interpreter without coverage: a tracer stalls the event loop while an
    asynchronous exception waits for a thread blocked in C, which is not what production sees.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    completed = subprocess.run(
        [sys.executable, "-c", STUCK_SCENARIO], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert completed.stdout.splitlines()[-1:] == ["True True 1"], completed.stdout + completed.stderr
