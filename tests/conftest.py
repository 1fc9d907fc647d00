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

    A zygote that outlives the test (a shared executor's) keeps one spare child, forked from it
    ahead of the next run and replaced after each run: one such fork per surviving zygote is not
    a leak, a second one is.
    """
    before = {child.pid for child in psutil.Process().children(recursive=True)}
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


def _new_children(before: set[int]) -> list[psutil.Process]:
    """Live children that did not exist before, less one fork of each surviving process (a zygote's spare)."""
    spare_allowed = set(before)
    leaked = []
    for child in psutil.Process().children(recursive=True):
        if child.pid in before or not _alive(child):
            continue
        try:
            parent = child.parent()
            is_spare = parent is not None and parent.pid in spare_allowed and child.cmdline() == parent.cmdline()
        except psutil.Error:
            continue
        if is_spare and parent is not None:
            spare_allowed.discard(parent.pid)
            continue
        leaked.append(child)
    return leaked


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
