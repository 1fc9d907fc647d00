"""Helper programs started from the event loop: exit statuses, signals, several waiters, no pidfd."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile

import pytest

from dify_sandbox.executors._spawned import SpawnedProcess


def start(script: str) -> SpawnedProcess:
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        return SpawnedProcess.start(
            ["/bin/sh", "-c", script],
            stdout=devnull,
            stderr=devnull,
            pass_fds=(),
            cwd=tempfile.gettempdir(),
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
    finally:
        os.close(devnull)


def test_the_exit_status_reaches_every_waiter() -> None:
    async def scenario() -> tuple[int, int, int]:
        process = start("sleep 0.2; exit 3")
        first, second = await asyncio.gather(process.wait(), process.wait())
        return first, second, await process.wait()

    assert asyncio.run(scenario()) == (3, 3, 3)


def test_a_killed_process_reports_the_signal_negated() -> None:
    async def scenario() -> int:
        process = start("exec sleep 30")
        waiter = asyncio.ensure_future(process.wait())
        await asyncio.sleep(0.1)
        os.kill(process.pid, signal.SIGKILL)
        return await asyncio.wait_for(waiter, 5)

    assert asyncio.run(scenario()) == -signal.SIGKILL


def test_the_process_leads_a_session_of_its_own() -> None:
    async def scenario() -> tuple[int, int]:
        process = start("sleep 0.2")
        session = os.getsid(process.pid)
        await process.wait()
        return process.pid, session

    pid, session = asyncio.run(scenario())
    assert session == pid


def test_without_pidfds_the_exit_is_polled(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError("pidfd_open is not available")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)

    async def scenario() -> int:
        return await asyncio.wait_for(start("sleep 0.1; exit 7").wait(), 5)

    assert asyncio.run(scenario()) == 7
