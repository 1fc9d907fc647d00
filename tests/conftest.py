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
    """Fails a test that leaves a child process of the test process behind (an expected failure only cleans up)."""
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    yield
    leaked: list[psutil.Process] = []
    for _ in range(50):
        leaked = [c for c in psutil.Process().children(recursive=True) if c.pid not in before and _alive(c)]
        if not leaked:
            return
        psutil.wait_procs(leaked, timeout=0.1)
    for child in leaked:
        child.kill()
    if request.node.get_closest_marker("xfail") is None:
        pytest.fail(f"leaked child processes: {[c.pid for c in leaked]}")


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
