"""A started executor per module, on an event loop in a background thread, driven synchronously by tests."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from dify_sandbox.config import load_settings
from dify_sandbox.executors import create_executor
from dify_sandbox.executors.base import Executor, RunRequest, RunResult

T = TypeVar("T")

EXECUTORS = ["fork", "thread"]


class Harness:
    """Owns a loop thread and one started executor."""

    def __init__(self, kind: str, **overrides: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.settings = load_settings(executor=kind, **overrides)
        # As in a server worker, where configure_logging sets the root level to LOG_LEVEL.
        self._root_level = logging.getLogger().level
        logging.getLogger().setLevel(self.settings.log_level)
        self.executor: Executor = create_executor(self.settings.executor, self.settings)
        self.call(self.executor.start())

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, code: str, *, preload: str = "", enable_network: bool = True, timeout: float = 5) -> RunResult:
        return self.call(self.executor.run(RunRequest("python3", code, preload, enable_network, timeout)))

    def gather(self, codes: list[str], timeout: float = 10) -> list[RunResult]:
        async def all_runs() -> list[RunResult]:
            return await asyncio.gather(
                *(self.executor.run(RunRequest("python3", c, "", True, timeout)) for c in codes)
            )

        # The runs' own timeout bounds them; the margin is for a loaded machine measured by coverage.
        return self.call(all_runs(), timeout=timeout * 4)

    def close(self) -> None:
        self.call(self.executor.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
        logging.getLogger().setLevel(self._root_level)


@pytest.fixture(scope="module", params=EXECUTORS)
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """One started executor of each kind, shared by a module's tests."""
    harness = Harness(request.param, output_limit_bytes=1 << 20)
    yield harness
    harness.close()


@pytest.fixture
def run(harness: Harness) -> Callable[..., RunResult]:
    """Runs one snippet and returns its result."""
    return harness.run


@pytest.fixture
def needs_isolation(harness: Harness, request: pytest.FixtureRequest) -> None:
    """Marks a test that relies on process isolation: expected to fail for the thread executor."""
    if harness.settings.executor == "thread":
        request.applymarker(pytest.mark.xfail(strict=True, reason="the thread executor does not isolate runs"))


@pytest.fixture
def needs_own_process(harness: Harness) -> None:
    """Skips, for the thread executor, a snippet that would end or corrupt the test process itself."""
    if harness.settings.executor == "thread":
        pytest.skip("the thread executor runs snippets inside the test process")
