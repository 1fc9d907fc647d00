"""Serving: a supervisor process holds the socket and N worker processes, each an embedded uvicorn.

Shutdown order per worker (SIGTERM or SIGINT): ``/health`` answers 503 and new runs are refused
at once; in-flight runs get ``grace`` seconds to finish; the rest are killed; uvicorn stops
accepting and closes; the lifespan closes the zygote and the node pool. A second SIGINT ends the
wait at once: runs in flight are killed and answered with the API's error envelope, and the same
closing follows, so nothing is left behind (uvicorn's own forced exit would skip the lifespan's
shutdown, and with it the removal of the executors' temp dirs). uvicorn's own
multi-process supervisor is not used because it hard-wires its ``Server`` class, whose first
signal closes the listener at once: that would refuse ``/health`` instead of answering 503.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from multiprocessing.context import SpawnProcess
from types import FrameType
from typing import Any

import structlog
import uvicorn

from dify_sandbox._prctl import forbid_inspection
from dify_sandbox._procfs import children_of, proc_state
from dify_sandbox.app import create_app
from dify_sandbox.config import Settings
from dify_sandbox.logging import configure_logging, log_file_for
from dify_sandbox.metrics import (
    MULTIPROC_ENV,
    mark_worker_dead,
    prepare_multiprocess_dir,
    remove_multiprocess_dir,
)
from dify_sandbox.packages.coordinator import DependencySupervisor
from dify_sandbox.packages.layout import with_packages_dir
from dify_sandbox.service import Service

__all__ = ["EXIT_STARTUP_FAILURE", "SandboxServer", "Supervisor", "serve"]

logger = structlog.get_logger("dify_sandbox.server")

EXIT_STARTUP_FAILURE = 3  # same meaning as uvicorn's STARTUP_FAILURE
EXIT_FORCED = 130
BACKLOG = 4096
# A worker that dies within this many seconds of its start counts as a start-up failure.
QUICK_DEATH_SECONDS = 5.0
MAX_QUICK_DEATHS = 3
# Seconds past the grace before the supervisor SIGKILLs a worker that would not stop.
STOP_MARGIN = 10.0
# A starting worker has not ticked yet; preloading heavy packages in its zygote may take this long.
STARTUP_SILENCE_SECONDS = 180.0

multiprocessing.allow_connection_pickling()
_spawn = multiprocessing.get_context("spawn")


class SandboxServer(uvicorn.Server):
    """uvicorn's server with a drain phase between the first signal and closing the listener."""

    def __init__(self, config: uvicorn.Config, service: Service, heartbeat: Callable[[], None]) -> None:
        super().__init__(config)
        self.service = service
        self.heartbeat = heartbeat
        self.signalled = False
        self.forced = False
        self.drain_deadline: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Only flags: the loop's on_tick does the work (https://docs.python.org/3/library/signal.html).
        if self.signalled and sig == signal.SIGINT:
            self.forced = True
        self.signalled = True

    async def on_tick(self, counter: int) -> bool:
        self.heartbeat()  # every 0.1 s while the event loop runs: a stopped or wedged worker goes quiet
        if not self.signalled and self.service.unhealthy:
            logger.error("Worker unhealthy; draining so the supervisor replaces it")
            self.signalled = True
        if self.signalled and not self.should_exit:
            await self._drain_step()
        return await super().on_tick(counter)

    async def _drain_step(self) -> None:
        admission = self.service.admission
        if self.drain_deadline is None:
            admission.draining = True
            self.drain_deadline = time.monotonic() + self.service.settings.grace
            logger.info("Draining", in_flight=admission.in_flight, grace_s=self.service.settings.grace)
        if admission.in_flight == 0:
            logger.info("Drained; stopping")
            self.should_exit = True
        elif self.forced:
            logger.warning("Second SIGINT; killing remaining runs", in_flight=admission.in_flight)
            admission.forced = True
            await self.service.kill_all()
            self.should_exit = True
        elif time.monotonic() >= self.drain_deadline:
            logger.warning("Grace period over; killing remaining runs", in_flight=admission.in_flight)
            await self.service.kill_all()
            self.should_exit = True


def run_worker(
    settings: Settings,
    sock: socket.socket,
    slot: int,
    heartbeats: Any,
    supervisor: multiprocessing.connection.Connection | None = None,
    package_keys: tuple[str, str] | None = None,
) -> None:
    """Entry point of one worker process: logging, then an embedded uvicorn on the shared socket.

    ``heartbeats`` is the supervisor's shared array of the workers' last tick (monotonic seconds);
    ``supervisor`` the worker's end of its dependency pipe, ``package_keys`` the keys it starts with.
    """
    log_file = log_file_for(settings.log_file, slot) if settings.log_file else None
    configure_logging(
        settings.log_level, settings.log_format, log_file, settings.log_file_max_bytes, settings.log_file_backups
    )
    structlog.contextvars.bind_contextvars(worker=slot)
    # Snippets (thread executor) must never read the key from the environment.
    os.environ.pop("API_KEY", None)
    forbid_inspection()
    service = Service(settings, slot, supervisor, package_keys)
    config = uvicorn.Config(
        create_app(settings, service),
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=False,  # our middleware logs requests, with the request id
        timeout_keep_alive=int(settings.keep_alive_seconds),
        timeout_graceful_shutdown=5,
        server_header=False,
    )

    def heartbeat() -> None:
        heartbeats[slot] = time.monotonic()

    server = SandboxServer(config, service, heartbeat)
    # uvicorn restores these after serving: a late signal (the supervisor forwards one) must not
    # kill the worker while it cleans up.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    server.run(sockets=[sock])
    if not server.started:
        raise SystemExit(EXIT_STARTUP_FAILURE)


class Supervisor:
    """Starts the workers, replaces any that die, and forwards shutdown signals to them."""

    def __init__(self, settings: Settings, sock: socket.socket) -> None:
        self.settings = settings
        self.sock = sock
        self.workers: dict[int, tuple[SpawnProcess, float]] = {}
        self.signals: list[int] = []
        self.stopping = False
        self.stop_deadline = 0.0
        self.quick_deaths = 0
        self.exit_code = 0
        # Each worker's last event-loop tick (CLOCK_MONOTONIC is the same in every process); 0: not yet.
        self.heartbeats = _spawn.RawArray(ctypes.c_double, settings.workers)
        self.dependencies = DependencySupervisor(settings)  # one sync per service, in a thread of this process

    def handle_signal(self, signum: int, frame: FrameType | None) -> None:
        # Queue only; the loop acts on it.
        self.signals.append(signum)

    def run(self) -> int:
        """Serves until a signal stops every worker; returns the process exit code."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self.handle_signal)
        for slot in range(self.settings.workers):
            self.spawn(slot)
        self.dependencies.start()
        while self.workers:
            sentinels = [process.sentinel for process, _ in self.workers.values()]
            ready = multiprocessing.connection.wait(sentinels + self.dependencies.fds(), timeout=0.2)
            self.dependencies.handle(ready)
            self.handle_signals()
            self.reap()
            self.reap_strays()
            self.replace_silent()
            if self.stopping and time.monotonic() > self.stop_deadline:
                self.kill_all()
        self.dependencies.close()
        logger.info("Stopped", exit_code=self.exit_code)
        return self.exit_code

    def spawn(self, slot: int) -> None:
        """Starts the worker for ``slot``."""
        self.heartbeats[slot] = 0.0
        ours, theirs = _spawn.Pipe()
        keys = self.dependencies.connect(slot, ours)
        process = _spawn.Process(
            target=run_worker,
            args=(self.settings, self.sock, slot, self.heartbeats, theirs, keys),
            name=f"worker-{slot}",
        )
        process.start()
        theirs.close()
        self.workers[slot] = (process, time.monotonic())
        logger.info("Worker started", worker=slot, worker_pid=process.pid)

    def handle_signals(self) -> None:
        """Acts on queued signals: the first starts the drain, a second SIGINT forces it."""
        while self.signals:
            signum = self.signals.pop(0)
            if signum == signal.SIGINT and self.stopping:
                logger.warning("Second SIGINT; forcing exit")
                self.forward(signal.SIGINT)
                self.exit_code = EXIT_FORCED
                continue
            if not self.stopping:
                logger.info("Shutting down", signal=signal.Signals(signum).name, grace_s=self.settings.grace)
                self.stopping = True
                self.stop_deadline = time.monotonic() + self.settings.grace + STOP_MARGIN
                self.forward(signal.SIGTERM)

    def forward(self, signum: int) -> None:
        """Sends ``signum`` to every live worker."""
        for process, _ in self.workers.values():
            if process.pid is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    def reap(self) -> None:
        """Removes dead workers; replaces them unless stopping or crash-looping."""
        for slot, (process, started) in list(self.workers.items()):
            if process.exitcode is None:
                continue
            process.join()
            del self.workers[slot]
            self.dependencies.forget(slot)
            if process.pid is not None:
                mark_worker_dead(process.pid)
            if self.stopping:
                logger.info("Worker stopped", worker=slot, exit_code=process.exitcode)
                continue
            logger.error("Worker died", worker=slot, worker_pid=process.pid, exit_code=process.exitcode)
            quick = time.monotonic() - started < QUICK_DEATH_SECONDS
            self.quick_deaths = self.quick_deaths + 1 if quick else 0
            if process.exitcode == EXIT_STARTUP_FAILURE or self.quick_deaths >= MAX_QUICK_DEATHS:
                logger.error("Workers cannot start; stopping the service")
                self.exit_code = EXIT_STARTUP_FAILURE
                self.stopping = True
                self.stop_deadline = time.monotonic() + self.settings.grace + STOP_MARGIN
                self.forward(signal.SIGTERM)
                continue
            self.spawn(slot)

    def replace_silent(self) -> None:
        """SIGKILLs a worker whose event loop stopped ticking (stopped, wedged); ``reap`` then replaces it."""
        if self.stopping:
            return  # the stop deadline covers a worker that hangs while draining
        now = time.monotonic()
        for slot, (process, started) in self.workers.items():
            beat = self.heartbeats[slot]
            silent = now - (beat or started)
            if process.pid is None or process.exitcode is not None:
                continue
            if silent > (self.settings.heartbeat_seconds if beat else STARTUP_SILENCE_SECONDS):
                logger.error(
                    "Worker stopped answering; replacing it",
                    worker=slot,
                    worker_pid=process.pid,
                    silent_s=round(silent, 1),
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                self.heartbeats[slot] = now  # one kill per silence, not one per loop turn

    def reap_strays(self) -> None:
        """Reaps exited processes that are not workers.

        As PID 1 of a container the supervisor inherits every orphan (say, a child a Node.js
        snippet spawned); without this they would stay zombies. Only zombies are reaped, and never
        with ``waitpid(-1)``, which would take the workers' exit statuses from multiprocessing.
        """
        workers = {process.pid for process, _ in self.workers.values()}
        for pid in zombie_children(os.getpid()):
            if pid not in workers:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)

    def kill_all(self) -> None:
        """Last resort past the deadline: SIGKILL (each worker's zygote then kills its runs)."""
        logger.error("Workers did not stop in time; killing them")
        self.forward(signal.SIGKILL)
        self.stop_deadline = float("inf")


def zombie_children(pid: int) -> list[int]:
    """The exited, unreaped children of ``pid`` (from ``/proc``; empty where it cannot tell)."""
    return [child for child in children_of(pid) if (state := proc_state(child)) is not None and state.state == "Z"]


def bind_socket(host: str, port: int) -> socket.socket:
    """Binds the listening socket once, in the supervisor, for every worker to accept on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings) -> int:
    """Binds, supervises the workers until shutdown, and returns the exit code."""
    forbid_inspection()
    settings = with_packages_dir(settings)  # resolved once, so every worker uses the same dir
    try:
        sock = bind_socket(settings.host, settings.port)
    except OSError as exc:
        # The usual cause is a port in use (another instance, the official sandbox): one line, no traceback.
        print(f"dify-sandbox: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_STARTUP_FAILURE
    own_metrics_dir = MULTIPROC_ENV not in os.environ
    metrics_dir = prepare_multiprocess_dir()
    logger.info(
        "Listening",
        address=f"http://{settings.host}:{sock.getsockname()[1]}",
        workers=settings.workers,
        executor=settings.executor,
    )
    try:
        return Supervisor(settings, sock).run()
    finally:
        sock.close()
        if own_metrics_dir:
            remove_multiprocess_dir(metrics_dir)
