"""Fixtures of the reliability suite: long-lived servers, and a background load that every fault must leave unharmed.

The server helpers of `tests/integration/conftest.py` are re-used as they are (`Server`, `launch_server`,
`start_server`, `sleep_marker` and the hook that adds a failed test's server output to its report).

- `long_lived_server(name, **env) -> Server`: a server that lives until the end of the test module (module-scoped
  factory). Its processes are not leaks of the test that happens to start it.
- `BackgroundLoad(server)`: client threads that send normal snippets in a loop, each printing a marker of its own,
  and remember every response so a test can check that none was lost, failed or mixed with another run's output.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
import pytest

from tests.integration.conftest import (  # noqa: F401 - fixtures and the report hook are used by this suite too
    SHARED_SERVERS,
    Server,
    _no_leaked_children,
    launch_server,
    processes_with_cmdline,
    pytest_runtest_makereport,
    sleep_marker,
    start_server,
)
from tests.polling import wait_for

LOAD_REQUEST_TIMEOUT = 30.0
PROGRESS_TIMEOUT = 20.0


def alive(proc: psutil.Process) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def gone(argv: list[str], timeout: float) -> bool:
    """Waits until no live process has exactly this argv; False if one is still there after `timeout`."""
    return bool(wait_for(lambda: not processes_with_cmdline(argv), timeout))


@pytest.fixture(scope="module")
def long_lived_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Server]]:
    """Factory: `long_lived_server(name, **env) -> Server`, stopped at the end of the module."""
    started: list[Server] = []

    def start(name: str, **env: object) -> Server:
        server = launch_server(tmp_path_factory.mktemp(name), **env)
        started.append(server)
        SHARED_SERVERS.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        SHARED_SERVERS.remove(server)


# --- background load ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One request of the background load and what came back."""

    client: int
    language: str
    marker: str
    started: float  # time.monotonic()
    ended: float
    status: int | None  # None: transport error
    body: Any  # parsed JSON, or the raw text when it was not JSON, or the transport error's description


@dataclass(slots=True)
class _Window:
    """A time span in which the zygote may die, so python runs that overlap it may answer code -500."""

    start: float
    end: float = float("inf")


def load_snippet(language: str, marker: str) -> str:
    """A normal run that writes its own marker to stdout and to stderr."""
    if language == "nodejs":
        return f"console.log('{marker}');\nconsole.error('{marker}-err');"
    return f"import sys\nprint('{marker}')\nsys.stderr.write('{marker}-err\\n')"


def expected_data(marker: str) -> dict[str, Any]:
    """The exact `data` of a load run: its own marker on each stream, nothing else."""
    return {"stdout": f"{marker}\n", "stderr": f"{marker}-err\n", "error": "", "exit_code": 0}


@dataclass
class BackgroundLoad:
    """`clients` threads, each sending one load run at a time in a loop (python3; every other one nodejs on the last
    client when `nodejs` is true) until `stop()`. Every response is kept until `take()` returns it."""

    server: Server
    clients: int = 4
    pause: float = 0.05
    nodejs: bool = True
    _results: list[LoadResult] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _windows: list[_Window] = field(default_factory=list)
    _last_started: dict[int, float] = field(default_factory=dict)
    total: int = 0

    def start(self) -> None:
        for client in range(self.clients):
            thread = threading.Thread(target=self._loop, args=(client,), name=f"load-{client}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(LOAD_REQUEST_TIMEOUT + 5)
        self._threads.clear()

    def _language(self, client: int, seq: int) -> str:
        return "nodejs" if self.nodejs and client == self.clients - 1 and seq % 2 else "python3"

    def _loop(self, client: int) -> None:
        token = secrets.token_hex(3)
        headers = {"X-Api-Key": self.server.api_key}
        with httpx.Client(
            base_url=self.server.url, headers=headers, timeout=LOAD_REQUEST_TIMEOUT, trust_env=False
        ) as http:
            seq = 0
            while not self._stop.is_set():
                seq += 1
                language = self._language(client, seq)
                marker = f"load-{token}-{client}-{seq}"
                body = {"language": language, "code": load_snippet(language, marker), "enable_network": True}
                started = time.monotonic()
                status: int | None = None
                try:
                    resp = http.post("/v1/sandbox/run", json=body)
                    status = resp.status_code
                    try:
                        parsed: Any = resp.json()
                    except ValueError:
                        parsed = resp.text
                except Exception as exc:  # a transport error is a finding, never a crash of the thread
                    parsed = f"{type(exc).__name__}: {exc}"
                with self._lock:
                    self._results.append(
                        LoadResult(client, language, marker, started, time.monotonic(), status, parsed)
                    )
                    self._last_started[client] = started
                    self.total += 1
                self._stop.wait(self.pause)

    # --- checks ---------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def zygote_may_die(self) -> Iterator[None]:
        """Python load runs that overlap this block may answer code -500 naming the zygote (it is being killed)."""
        window = _Window(time.monotonic())
        self._windows.append(window)
        try:
            yield
        finally:
            window.end = time.monotonic()

    def take(self) -> list[LoadResult]:
        """The responses received since the last call."""
        with self._lock:
            results, self._results = self._results, []
        return results

    def _tolerated(self, result: LoadResult) -> bool:
        body = result.body
        if result.language != "python3" or result.status != 200 or not isinstance(body, dict):
            return False
        if body.get("code") != -500 or body.get("data") is not None or "zygote" not in str(body.get("message")):
            return False
        return any(result.started <= window.end and result.ended >= window.start for window in self._windows)

    def problems(self, results: list[LoadResult]) -> list[str]:
        """Every response that is not exactly its own successful run (tolerated zygote losses aside)."""
        found = []
        for result in results:
            ok = (
                result.status == 200
                and isinstance(result.body, dict)
                and result.body.get("code") == 0
                and result.body.get("data") == expected_data(result.marker)
            )
            if not ok and not self._tolerated(result):
                found.append(
                    f"{result.language} {result.marker} after {result.ended - result.started:.2f} s: "
                    f"HTTP {result.status} {str(result.body)[:300]}"
                )
        return found

    def wait_for_every_client(self, since: float, timeout: float = PROGRESS_TIMEOUT) -> bool:
        """Waits until every client has started and finished a run after `since` (the service goes on for all)."""

        def progressed() -> bool:
            with self._lock:
                return all(self._last_started.get(client, 0.0) >= since for client in range(self.clients))

        return bool(wait_for(progressed, timeout))
