"""Fixtures for every test tier: an isolated environment and a check that no child process leaks."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psutil
import pytest


@pytest.fixture(autouse=True)
def _isolated_environ(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Runs each test without the official settings' env vars and from an empty cwd."""
    official = {"API_KEY", "MAX_WORKERS", "MAX_REQUESTS", "WORKER_TIMEOUT", "DEBUG", "ENABLE_NETWORK"}
    for name in list(os.environ):
        if name in official or name.startswith("SANDBOX_") or name.upper().endswith("_PROXY"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(autouse=True)
def _no_leaked_children(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails a test that leaves a child process of the test process behind (an expected failure only cleans up).

    A process that outlives the test (a shared executor's zygote) may replace a child it had before:
    a zygote keeps one spare child forked ahead of the next run, a new one after each run.
    """
    before = {child.pid: _parent(child) for child in psutil.Process().children(recursive=True)}
    yield
    leaked: list[psutil.Process] = []
    for _ in range(50):
        leaked = _new_children(before)
        if not leaked:
            return
        psutil.wait_procs(leaked, timeout=0.1)
    for child in leaked:
        child.kill()
    if request.node.get_closest_marker("xfail") is None:
        pytest.fail(f"leaked child processes: {[c.pid for c in leaked]}")


def _parent(process: psutil.Process) -> int | None:
    try:
        return process.ppid()
    except psutil.NoSuchProcess:
        return None


def _new_children(before: dict[int, int | None]) -> list[psutil.Process]:
    """Live children that did not exist before, less one replacement per child a surviving parent lost."""
    now = [c for c in psutil.Process().children(recursive=True) if _alive(c)]
    alive = {c.pid for c in now}
    replaceable: dict[int | None, int] = {}
    for pid, parent in before.items():
        if pid not in alive and parent in alive:
            replaceable[parent] = replaceable.get(parent, 0) + 1
    leaked = []
    for child in now:
        if child.pid in before:
            continue
        parent = _parent(child)
        if replaceable.get(parent, 0) > 0:
            replaceable[parent] -= 1
            continue
        leaked.append(child)
    return leaked


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
