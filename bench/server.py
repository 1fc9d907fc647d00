"""Starts the real server (``python -m dify_sandbox serve``) on a free port and stops its whole process group.

The server runs with its defaults except ``SANDBOX_PORT`` and ``SANDBOX_EXECUTOR`` (and ``--server-env`` when
given), so the figures describe what an operator gets out of the box. Its output goes to a log file next to the
results. The same class starts the constant-reply reference app (another module, ready once a POST answers 200).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx
import psutil  # type: ignore[import-untyped]  # no stubs in the dev group

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 15.0
LOG_TAIL_BYTES = 4000
# Idle: below this share of one core over one window.
IDLE_CORES = 0.05
IDLE_WINDOW_SECONDS = 0.25
IDLE_TIMEOUT_SECONDS = 15.0


class ServerStartError(RuntimeError):
    """The server exited or never answered ``GET /health`` with 200."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """The server process under test; use as a context manager."""

    def __init__(
        self,
        python: str,
        log_path: Path,
        extra_env: Mapping[str, str],
        *,
        argv: Sequence[str] = ("-m", "dify_sandbox", "serve"),
        ready_path: str = "/health",
        ready_body: bytes | None = None,
        ready_headers: Mapping[str, str] | None = None,
    ) -> None:
        """``argv`` follows the interpreter; the process is ready once ``ready_path`` answers 200 (to a POST of
        ``ready_body`` when given, else to a GET)."""
        self.python = python
        self.log_path = log_path
        self.argv = tuple(argv)
        self.ready_path, self.ready_body, self.ready_headers = ready_path, ready_body, dict(ready_headers or {})
        self.host, self.port = "127.0.0.1", free_port()
        self.base_url = f"http://{self.host}:{self.port}"
        self.env = {**os.environ, **extra_env, "SANDBOX_PORT": str(self.port)}
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("server not started")
        return self._process.pid

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            [self.python, *self.argv],
            env=self.env,
            cwd=REPO_ROOT,  # where an operator would start it: conf/ and the requirements files resolve from here
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches the zygote and any run child
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                assert self._process is not None
                if self._process.poll() is not None:
                    raise ServerStartError(f"server exited with {self._process.returncode}\n{self.log_tail()}")
                try:
                    if self.ready_body is None:
                        response = client.get(self.ready_path, headers=self.ready_headers)
                    else:
                        response = client.post(self.ready_path, content=self.ready_body, headers=self.ready_headers)
                    if response.status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise ServerStartError(f"no 200 from {self.ready_path} within {READY_TIMEOUT_SECONDS:.0f} s\n{self.log_tail()}")

    def exit_status(self) -> int | None:
        """None while the server runs; its exit status once it has exited (or was never started)."""
        if self._process is None:
            return -1
        return self._process.poll()

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the server's process tree, reaped children included."""
        root = psutil.Process(self.pid)
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system + times.children_user + times.children_system
        return total

    def wait_idle(self, timeout: float = IDLE_TIMEOUT_SECONDS) -> float:
        """Waits until the server tree uses next to no CPU (runs left over from the last scenario are done).

        Returns the seconds waited; gives up quietly after ``timeout``.
        """
        started = time.monotonic()
        before = self.cpu_seconds()
        while time.monotonic() - started < timeout:
            time.sleep(IDLE_WINDOW_SECONDS)
            after = self.cpu_seconds()
            if after - before < IDLE_CORES * IDLE_WINDOW_SECONDS:
                break
            before = after
        return time.monotonic() - started

    def log_tail(self) -> str:
        if self._log is not None:
            self._log.flush()
        data = self.log_path.read_bytes()[-LOG_TAIL_BYTES:]
        return f"--- last lines of {self.log_path} ---\n{data.decode(errors='replace')}"

    def stop(self) -> int | None:
        """SIGTERM the process group, SIGKILL it after the grace period; returns the server's exit status."""
        process, self._process = self._process, None
        if process is None:
            return None
        try:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            # Leftovers in the group (a run child the server failed to reap) would skew the next benchmark.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
        return process.returncode

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
