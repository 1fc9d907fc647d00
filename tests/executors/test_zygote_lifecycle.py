"""The fork executor's zygote: recovery after death, re-warm, and a clean close."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from dify_sandbox.errors import ZygoteUnavailableError
from dify_sandbox.executors.zygote.client import ZygoteExecutor
from tests.polling import wait_for

from .conftest import Harness


@pytest.fixture
def fork_harness() -> Iterator[Harness]:
    harness = Harness("fork")
    yield harness
    harness.close()


def _zygote_pid(harness: Harness) -> int:
    executor = harness.executor
    assert isinstance(executor, ZygoteExecutor)
    zygote = executor._zygote
    assert zygote is not None
    assert zygote.pid is not None
    return zygote.pid


def test_killed_zygote_fails_its_runs_and_is_replaced(fork_harness: Harness) -> None:
    """1. Start a slow run. 2. SIGKILL the zygote. 3. The run fails with ZygoteUnavailableError.
    4. A new zygote serves the next run, and the old run's child is gone."""
    old_pid = _zygote_pid(fork_harness)
    errors: list[BaseException] = []

    def slow_run() -> None:
        try:
            fork_harness.run("import time\ntime.sleep(20)", timeout=30)
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    thread = threading.Thread(target=slow_run)
    thread.start()
    time.sleep(0.5)
    children = psutil.Process(old_pid).children()
    os.kill(old_pid, signal.SIGKILL)
    thread.join(10)
    assert len(errors) == 1
    assert isinstance(errors[0], ZygoteUnavailableError)
    assert "zygote" in str(errors[0])
    assert fork_harness.run("print('back')").stdout == "back\n"
    assert _zygote_pid(fork_harness) != old_pid
    psutil.wait_procs(children, timeout=2)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def _live_children(pid: int) -> list[psutil.Process]:
    return [c for c in psutil.Process(pid).children() if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def _only_child(pid: int) -> list[psutil.Process]:
    """The live children of ``pid`` once there is exactly one (a finished run may still be exiting)."""
    children = _live_children(pid)
    return children if len(children) == 1 else []


def test_dead_spare_child_is_replaced(fork_harness: Harness) -> None:
    """The zygote keeps one child forked ahead of the next run. 1. Kill it. 2. The next run works.
    3. A new spare is waiting again, not the killed one."""
    zygote = _zygote_pid(fork_harness)
    spares = wait_for(lambda: _only_child(zygote), timeout=5)
    assert len(spares) == 1
    spares[0].kill()
    psutil.wait_procs(spares, timeout=2)
    assert fork_harness.run("print('ok')").stdout == "ok\n"
    replacements = wait_for(lambda: _only_child(zygote), timeout=5)
    assert len(replacements) == 1
    assert replacements[0].pid != spares[0].pid


def test_rewarm_swaps_the_zygote_without_dropping_runs(fork_harness: Harness) -> None:
    """1. Start a run. 2. Re-warm. 3. The run completes; new runs go to the new zygote."""
    old_pid = _zygote_pid(fork_harness)
    results = []
    thread = threading.Thread(target=lambda: results.append(fork_harness.run("import time\ntime.sleep(1)\nprint(1)")))
    thread.start()
    time.sleep(0.3)
    fork_harness.call(fork_harness.executor.rewarm())
    assert _zygote_pid(fork_harness) != old_pid
    thread.join(10)
    assert results[0].stdout == "1\n"
    assert fork_harness.run("print(2)").stdout == "2\n"
    deadline = time.monotonic() + 5
    while psutil.pid_exists(old_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == psutil.STATUS_ZOMBIE


def test_close_kills_in_flight_runs() -> None:
    """Closing the executor ends a running snippet and leaves no process (checked by the leak fixture)."""
    harness = Harness("fork")
    future_thread = threading.Thread(target=lambda: _ignore(lambda: harness.run("import time\ntime.sleep(30)")))
    future_thread.start()
    time.sleep(0.5)
    harness.close()
    future_thread.join(10)
    assert not future_thread.is_alive()


def _ignore(fn: Callable[[], object]) -> None:
    # The run is expected to fail when its executor closes.
    with contextlib.suppress(Exception):
        fn()
