"""Fixtures of the API tier: the real ASGI app, driven in-process over ``httpx.ASGITransport``.

Everything between the client and the executor is the service's own code (``create_app``, the run
fast path, FastAPI, admission, the error handlers); only the executors are replaced, by
:class:`ScriptedExecutor`, which answers each run with what the test scripted. No server process,
no fork, no node: the whole tier runs in seconds.

Fixtures:
- `make_api(path="fast", **settings) -> Api`: a started app with these settings. `path="framework"`
  takes the run fast path out, so every request goes through FastAPI's routing.
- `api`: the app as deployed (fast path in front), default settings.
- `run_api`: the same, once per path (`fast`, `framework`), for what both paths must answer alike.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from dify_sandbox.api.fast_run import RunFastPath
from dify_sandbox.api.middleware import RequestContextMiddleware
from dify_sandbox.app import create_app
from dify_sandbox.config import load_settings
from dify_sandbox.executors.base import RunRequest, RunResult
from dify_sandbox.executors.outcome import RunOutcome
from dify_sandbox.service import Service

KEY = "dify-sandbox"
RUN = "/v1/sandbox/run"
PATHS = ["fast", "framework"]
# A spin on the event loop, for a condition that only the loop's other tasks can make true.
MAX_LOOP_TURNS = 10_000
# Longest a held run waits for its release: a test that never releases fails rather than hangs.
HOLD_SECONDS = 10.0

Outcome: TypeAlias = RunResult | BaseException


@dataclass
class ScriptedExecutor:
    """An executor whose runs give the outcomes a test scripted: a result, or an exception to raise.

    Without a script, a run succeeds and prints ``ran <language>``. ``hold()`` keeps every run open
    until ``release()``, to fill the admission limits.
    """

    unhealthy: bool = False
    requests: list[RunRequest] = field(default_factory=list)
    outcomes: deque[Outcome] = field(default_factory=deque)
    started: int = 0
    closed: int = 0
    rewarms: int = 0
    _gate: asyncio.Event | None = None
    _arrivals: asyncio.Condition = field(default_factory=asyncio.Condition)

    def script(self, *outcomes: Outcome) -> None:
        """The next runs answer these, in order."""
        self.outcomes.extend(outcomes)

    def hold(self) -> None:
        """Runs from now on wait for :meth:`release` before they answer."""
        self._gate = asyncio.Event()

    def release(self) -> None:
        """Lets the held runs answer."""
        assert self._gate is not None
        self._gate.set()

    async def wait_for_runs(self, count: int) -> None:
        """Returns once ``count`` runs have reached the executor."""
        async with self._arrivals:
            await asyncio.wait_for(self._arrivals.wait_for(lambda: len(self.requests) >= count), HOLD_SECONDS)

    async def start(self) -> None:
        self.started += 1

    async def run(self, request: RunRequest) -> RunResult:
        async with self._arrivals:
            self.requests.append(request)
            self._arrivals.notify_all()
        if self._gate is not None:
            await asyncio.wait_for(self._gate.wait(), HOLD_SECONDS)
        outcome = (
            self.outcomes.popleft()
            if self.outcomes
            else RunResult(f"ran {request.language}\n", "", RunOutcome.exited(0))
        )
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def rewarm(self) -> None:
        self.rewarms += 1

    async def kill_all(self) -> None:
        if self._gate is not None:
            self._gate.set()

    async def close(self) -> None:
        self.closed += 1


class FrameworkCalls:
    """Passes every request on to the FastAPI app and counts those that got there."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


@dataclass
class Api:
    """One started app, its client, and what sits beneath the HTTP layer."""

    client: httpx.AsyncClient
    service: Service
    python: ScriptedExecutor
    nodejs: ScriptedExecutor
    framework: FrameworkCalls
    path: str

    async def run(self, code: str = "print(1)", *, language: str = "python3", **fields: Any) -> httpx.Response:
        """POST /v1/sandbox/run with the JSON body Dify sends."""
        body = {"language": language, "code": code, "preload": "", "enable_network": True, **fields}
        return await self.client.post(RUN, json=body)

    async def post(
        self, content: bytes | str, content_type: str | None = "application/json", **headers: str
    ) -> httpx.Response:
        """POST /v1/sandbox/run with a raw body and the given content type."""
        sent = dict(headers)
        if content_type is not None:
            sent["Content-Type"] = content_type
        return await self.client.post(RUN, content=content, headers=sent)

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Lets the event loop run until ``predicate`` holds."""
        for _ in range(MAX_LOOP_TURNS):
            if predicate():
                return
            await asyncio.sleep(0)
        raise AssertionError("condition never held")


MakeApi: TypeAlias = Callable[..., Awaitable[Api]]


def _build(path: str, raise_app_exceptions: bool, overrides: dict[str, Any]) -> Api:
    # No per-run uids: starting a service as root would otherwise kill the processes of its uid range.
    settings = load_settings(**{"executor": "thread", "run_uids": "", **overrides})
    service = Service(settings)
    python, nodejs = ScriptedExecutor(), ScriptedExecutor()
    service.python, service.nodejs = python, nodejs
    outer = create_app(settings, service)
    assert isinstance(outer, RequestContextMiddleware)
    fast_path = outer.app
    assert isinstance(fast_path, RunFastPath)
    framework = FrameworkCalls(fast_path.app)
    fast_path.app = framework
    if path == "framework":
        outer.app = framework
    transport = httpx.ASGITransport(app=outer, raise_app_exceptions=raise_app_exceptions)
    client = httpx.AsyncClient(transport=transport, base_url="http://sandbox", headers={"X-Api-Key": KEY})
    return Api(client, service, python, nodejs, framework, path)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def make_api() -> AsyncIterator[MakeApi]:
    """Factory: ``await make_api(path="fast", raise_app_exceptions=True, **settings)``; closed after the test."""
    built: list[Api] = []

    async def make(path: str = "fast", *, raise_app_exceptions: bool = True, **overrides: Any) -> Api:
        api = _build(path, raise_app_exceptions, overrides)
        built.append(api)
        # The lifespan's work, without its gc.freeze of the whole test process.
        await api.service.start()
        return api

    yield make
    for api in built:
        await api.client.aclose()
        await api.service.close()


@pytest.fixture(params=PATHS)
def run_path(request: pytest.FixtureRequest) -> str:
    """``fast`` (the app as deployed) or ``framework`` (without the run fast path)."""
    return str(request.param)


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    """The app as deployed, default settings."""
    return await make_api()


@pytest.fixture
async def run_api(make_api: MakeApi, run_path: str) -> Api:
    """The app with default settings, once with the run fast path and once without it."""
    return await make_api(run_path)
