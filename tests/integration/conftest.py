"""Fixtures that start the real service (`python -m dify_sandbox serve`) and talk HTTP to it.

Each server runs in its own session (`start_new_session=True`) in a temp dir as cwd, configured only
through the environment, exactly as an operator would start it. Cleanup sends SIGTERM to the whole
process group, then SIGKILL, then kills any descendant seen during the test that is still alive.
When a test fails, the captured stdout/stderr of every server it used is added to the report.

Fixtures:
- `start_server(**env) -> Server`: a fresh server per call, stopped at the end of the test.
- `server`: the session-wide server with the default configuration (contract tests).
- `sleep_marker`: a unique `sleep` argument, so a test can find "its" processes with psutil.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

DEFAULT_API_KEY = "dify-sandbox"
ZYGOTE_MARKER = "dify_sandbox.executors.zygote"
STARTUP_TIMEOUT = 10.0  # the contract says ready within ~5 s; the margin is for a loaded CI machine
STOP_TIMEOUT = 8.0
REQUEST_TIMEOUT = 30.0
OUTPUT_TAIL_CHARS = 20_000

# Every setting the server reads from the environment. The developer's shell must not change what a test
# sees, so these are removed from the inherited environment and only what a test asks for is set.
SERVER_ENV_NAMES = frozenset(
    {
        "API_KEY", "DEBUG", "GIN_MODE", "MAX_WORKERS", "MAX_REQUESTS", "WORKER_TIMEOUT", "ENABLE_NETWORK",
        "ENABLE_PRELOAD", "PYTHON_PATH", "PYTHON_LIB_PATH", "PIP_MIRROR_URL", "PYTHON_DEPS_UPDATE_INTERVAL",
        "NODEJS_PATH", "ALLOWED_SYSCALLS", "ALLOWED_ENV_VARS", "SYSTEM_LIB_REQUIREMENTS", "LOG_PATH", "LOG_LEVEL",
        "SOCKS5_PROXY", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy",
        "all_proxy", "ALL_PROXY",
    }
)  # fmt: skip

_SERVERS_KEY = pytest.StashKey[list["Server"]]()
# Disjoint per-run uid ranges, one per server a test session starts (ranges of 40: 20 per worker slot at most).
_RUN_UID_RANGES = (f"{first}-{first + 39}" for first in itertools.count(20000, 40))


class ServerStartError(RuntimeError):
    """The server process exited or never answered `/health` during start-up."""


def free_port() -> int:
    """A TCP port that was free a moment ago (bind to port 0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alive(proc: psutil.Process) -> bool:
    """True if the process exists and is not a zombie (a zombie has exited; only its parent has not reaped it)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def processes_with_cmdline(argv: list[str]) -> list[psutil.Process]:
    """Live processes whose argv is exactly `argv`."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.cmdline() == argv and _alive(proc):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def session_members(sid: int) -> list[psutil.Process]:
    """Live processes whose session id is `sid`."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and _alive(proc):
                found.append(proc)
        except (OSError, psutil.Error):
            continue
    return found


class Server:
    """One running `python -m dify_sandbox serve` process and the ways a test talks to it."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, api_key: str, workdir: Path) -> None:
        self.proc = proc
        self.port = port
        self.api_key = api_key
        self.workdir = workdir
        self.pgid = proc.pid  # start_new_session=True makes the server the leader of its own group and session
        self._clients: list[httpx.Client] = []
        self._pool: ThreadPoolExecutor | None = None
        self._seen: dict[tuple[int, float], psutil.Process] = {}
        self._http: httpx.Client | None = None
        self.ready_seconds: float | None = None  # set by wait_ready

    # --- output -----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stdout_text(self) -> str:
        return (self.workdir / "server.stdout").read_text(errors="replace")

    def stderr_text(self) -> str:
        return (self.workdir / "server.stderr").read_text(errors="replace")

    def output(self) -> str:
        """The captured stdout and stderr of the server (tails, for reports)."""
        state = "running" if self.proc.poll() is None else f"exited with {self.proc.returncode}"
        return (
            f"pid {self.proc.pid}, {state}, url {self.url}\n"
            f"--- stdout ---\n{self.stdout_text()[-OUTPUT_TAIL_CHARS:]}\n"
            f"--- stderr ---\n{self.stderr_text()[-OUTPUT_TAIL_CHARS:]}"
        )

    # --- HTTP -------------------------------------------------------------------------------------
    def client(self, api_key: str | None = None, *, timeout: float = REQUEST_TIMEOUT) -> httpx.Client:
        """A new client; `api_key=None` sends no `X-Api-Key` header. Closed when the server stops."""
        headers = {} if api_key is None else {"X-Api-Key": api_key}
        client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, trust_env=False)
        self._clients.append(client)
        return client

    @property
    def http(self) -> httpx.Client:
        """A shared client that sends the right API key."""
        if self._http is None:
            self._http = self.client(self.api_key)
        return self._http

    def run(
        self,
        code: str,
        *,
        language: str = "python3",
        preload: str = "",
        enable_network: bool = True,
        timeout: float = REQUEST_TIMEOUT,
        client: httpx.Client | None = None,
        **extra: Any,
    ) -> httpx.Response:
        """POST /v1/sandbox/run with the JSON body Dify sends."""
        body = {"language": language, "code": code, "preload": preload, "enable_network": enable_network, **extra}
        return (client or self.http).post("/v1/sandbox/run", json=body, timeout=timeout)

    def run_ok(self, code: str, **kwargs: Any) -> dict[str, Any]:
        """Runs `code`, asserts the envelope is a success, and returns `data`."""
        resp = self.run(code, **kwargs)
        assert resp.status_code == 200, f"HTTP {resp.status_code}: {resp.text}"
        body = resp.json()
        assert body["code"] == 0, body
        assert body["message"] == "success", body
        assert set(body["data"]) >= {"stdout", "stderr", "error", "exit_code"}, body
        return body["data"]

    def submit_run(self, code: str, **kwargs: Any) -> Future[httpx.Response]:
        """Starts a run on a background thread (with its own connection); returns its future."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"run-{self.port}")
        client = self.client(self.api_key)
        return self._pool.submit(self.run, code, client=client, **kwargs)

    def health_status(self, timeout: float = 1.0) -> int | str:
        """The HTTP status of GET /health on a fresh connection, or the transport error's class name."""
        try:
            with httpx.Client(timeout=timeout, trust_env=False) as client:
                return client.get(f"{self.url}/health").status_code
        except httpx.TransportError as exc:
            return type(exc).__name__

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> float:
        """Polls /health until 200; returns the seconds it took. Raises ServerStartError."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise ServerStartError(f"server exited during start-up\n{self.output()}")
            if self.health_status(timeout=0.5) == 200:
                self.ready_seconds = time.monotonic() - start
                return self.ready_seconds
            time.sleep(0.05)
        raise ServerStartError(f"server not ready after {timeout} s\n{self.output()}")

    # --- processes --------------------------------------------------------------------------------
    def descendants(self) -> list[psutil.Process]:
        """Live descendants of the server process, also remembered for the leak checks."""
        try:
            procs = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return []
        alive = []
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                self._seen.setdefault((proc.pid, proc.create_time()), proc)
                if _alive(proc):
                    alive.append(proc)
        return alive

    def zygotes(self) -> list[psutil.Process]:
        """The zygote processes of this server. A forked run child has the zygote's cmdline too; skip those."""
        matching = [proc for proc in self.descendants() if ZYGOTE_MARKER in _cmdline(proc)]
        pids = {proc.pid for proc in matching}
        result = []
        for proc in matching:
            with contextlib.suppress(psutil.Error):
                if proc.ppid() not in pids:
                    result.append(proc)
        return result

    def survivors(self) -> list[psutil.Process]:
        """Processes that belong to this server and are still alive: any descendant ever seen, the server's
        session, and the server itself."""
        found: dict[int, psutil.Process] = {}
        for proc in self._seen.values():
            if _alive(proc):
                found[proc.pid] = proc
        for proc in session_members(self.pgid):
            found[proc.pid] = proc
        if self.proc.poll() is None:
            found[self.proc.pid] = psutil.Process(self.proc.pid)
        return list(found.values())

    def wait_no_survivors(self, timeout: float = 3.0) -> list[psutil.Process]:
        """Waits until nothing of the server is alive; returns what is left after `timeout`."""
        deadline = time.monotonic() + timeout
        left = self.survivors()
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = self.survivors()
        return left

    def terminate(self, timeout: float = 10.0) -> int:
        """Sends SIGTERM to the server's main process and returns its exit code; fails the test after `timeout`."""
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"server did not exit within {timeout:.0f} s of SIGTERM")

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after STOP_TIMEOUT, then kill any leftover descendant."""
        self.descendants()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pgid, signal.SIGKILL)
                self.proc.wait(STOP_TIMEOUT)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGKILL)
        for proc in self.survivors():
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for client in self._clients:
            client.close()


def launch_server(
    workdir: Path,
    *,
    wait: bool = True,
    port: int | None = None,
    set_port: bool = True,
    api_key: str | None = None,
    argv: Sequence[str] | None = None,
    **env: object,
) -> Server:
    """Starts `python -m dify_sandbox serve` in `workdir` with the scrubbed environment plus `env`.

    Test defaults: one server worker and a 2 s shutdown grace. `set_port=False` leaves `SANDBOX_PORT`
    unset (the port then comes from a config file; pass it as `port`). `api_key` is the key the
    server's `http` client sends when it differs from the env `API_KEY` (e.g. set in a config file).
    `argv` replaces the command (e.g. an installed `dify-sandbox serve` under `setpriv`).
    """
    settings = {key: str(value) for key, value in env.items()}
    settings.setdefault("SANDBOX_WORKERS", "1")
    # As root, each server's runs get uids of their own: servers running side by side must not share them.
    settings.setdefault("SANDBOX_RUN_UIDS", next(_RUN_UID_RANGES))
    settings.setdefault("SANDBOX_GRACE_SECONDS", "2")
    port = port or free_port()
    if set_port:
        settings.setdefault("SANDBOX_PORT", str(port))
    full_env = {
        key: value
        for key, value in os.environ.items()
        if key not in SERVER_ENV_NAMES and not key.upper().startswith("SANDBOX_")
    }
    full_env.update(settings)
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / "server.stdout").open("wb") as out, (workdir / "server.stderr").open("wb") as err:
        proc = subprocess.Popen(
            list(argv or [sys.executable, "-m", "dify_sandbox", "serve"]),
            cwd=workdir,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    server = Server(proc, port, api_key or settings.get("API_KEY", DEFAULT_API_KEY), workdir)
    if wait:
        try:
            server.wait_ready()
        except BaseException:
            server.stop()
            raise
    return server


def attach(node: pytest.Item, server: Server) -> None:
    """Adds the server's output to the report of `node` if it fails."""
    node.stash.setdefault(_SERVERS_KEY, []).append(server)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.failed:
        for server in item.stash.get(_SERVERS_KEY, []):
            report.sections.append((f"server pid {server.proc.pid} output ({report.when})", server.output()))
    return report


@pytest.fixture
def start_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Factory: `start_server(**env) -> Server`; every server is stopped (TERM, then KILL) after the test."""
    servers: list[Server] = []

    def start(
        *,
        wait: bool = True,
        port: int | None = None,
        set_port: bool = True,
        api_key: str | None = None,
        argv: Sequence[str] | None = None,
        **env: object,
    ) -> Server:
        workdir = tmp_path / f"server{len(servers)}"
        server = launch_server(workdir, wait=False, port=port, set_port=set_port, api_key=api_key, argv=argv, **env)
        servers.append(server)
        attach(request.node, server)
        if wait:
            server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def unused_port() -> int:
    """A TCP port that is free right now (for servers whose port comes from a config file)."""
    return free_port()


SHARED_SERVERS: list[Server] = []  # servers that outlive a test; their processes are not leaks


@pytest.fixture(scope="session")
def session_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Server]]:
    """Starts servers that live until the end of the session (shared by contract tests)."""

    def start(name: str, **env: object) -> Server:
        server = launch_server(tmp_path_factory.mktemp(name), **env)
        SHARED_SERVERS.append(server)
        return server

    yield start
    while SHARED_SERVERS:
        SHARED_SERVERS.pop().stop()


@pytest.fixture(autouse=True)
def _no_leaked_children() -> Iterator[None]:
    """Fails a test that leaves a child process of the test process behind (overrides tests/conftest.py).

    A shared server outlives the test and may legitimately replace its zygote or workers during it
    (dependencies/update restarts the zygote), so processes of a shared server that is still running
    are not leaks. Per-test servers must be gone entirely by now: `start_server` stopped them.
    """
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    yield

    def leaked() -> list[psutil.Process]:
        owned: set[int] = set()
        for shared in SHARED_SERVERS:
            if shared.proc.poll() is None:
                owned.add(shared.proc.pid)
                owned.update(proc.pid for proc in shared.descendants())
        return [
            child
            for child in psutil.Process().children(recursive=True)
            if child.pid not in before and child.pid not in owned and _alive(child)
        ]

    left = leaked()
    deadline = time.monotonic() + 3
    while left and time.monotonic() < deadline:
        psutil.wait_procs(left, timeout=0.1)
        left = leaked()
    if left:
        described = [(child.pid, _cmdline(child)) for child in left]
        for child in left:
            with contextlib.suppress(psutil.Error):
                child.kill()
        pytest.fail(f"leaked child processes: {described}")


@pytest.fixture(scope="session")
def _default_server(session_server_factory: Callable[..., Server]) -> Server:
    return session_server_factory("default-server")


def alive_shared(request: pytest.FixtureRequest, server: Server, name: str) -> Server:
    """A shared server for one test: its output goes into the test's report, and the test fails fast if it died."""
    attach(request.node, server)
    if server.proc.poll() is not None:
        pytest.fail(f"the {name} server has exited\n{server.output()}")
    return server


@pytest.fixture
def server(request: pytest.FixtureRequest, _default_server: Server) -> Server:
    """The shared server with the default configuration (one server worker); fails fast if it died."""
    return alive_shared(request, _default_server, "shared")


@pytest.fixture
def sleep_marker() -> Iterator[str]:
    """A unique `sleep` duration (e.g. `100.4821937`) that identifies processes a snippet starts.

    Any `sleep <marker>` still alive at teardown is killed so one failure does not leak into later runs.
    """
    marker = f"100.{secrets.randbelow(10**7):07d}"
    yield marker
    for proc in processes_with_cmdline(["sleep", marker]):
        with contextlib.suppress(psutil.Error):
            proc.kill()


RESTRICTED_API_KEY = "secret-xyz"


@pytest.fixture(scope="session")
def _restricted_server(session_server_factory: Callable[..., Server]) -> Server:
    return session_server_factory(
        "restricted-server",
        API_KEY=RESTRICTED_API_KEY,
        ENABLE_NETWORK="false",
        ENABLE_PRELOAD="true",
        WORKER_TIMEOUT="1",
    )


@pytest.fixture
def restricted_server(request: pytest.FixtureRequest, _restricted_server: Server) -> Server:
    """A shared server with API_KEY=secret-xyz, ENABLE_NETWORK=false, ENABLE_PRELOAD=true and WORKER_TIMEOUT=1."""
    return alive_shared(request, _restricted_server, "restricted")
