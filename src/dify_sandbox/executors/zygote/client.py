"""The worker side of the fork executor: owns one zygote process at a time and runs snippets through it.

:class:`ZygoteProcess` is one zygote and its socket; :class:`ZygoteExecutor` keeps a live one,
respawns it when it dies, swaps in a fresh one on ``rewarm`` and pings it to catch a hang. All
I/O is callbacks on the server's event loop: a run costs three pipes and no thread or task.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import structlog

from dify_sandbox._procfs import kill_group
from dify_sandbox.config import Settings
from dify_sandbox.confinement.policy import Confinement, plan_for
from dify_sandbox.dependencies import import_names, read_requirements
from dify_sandbox.errors import ExecutorError, ProtocolError, ZygoteUnavailableError
from dify_sandbox.executors._disk_budget import DiskBudget
from dify_sandbox.executors._pipes import PipeReader, PipeWriter
from dify_sandbox.executors._rlimits import RunLimits
from dify_sandbox.executors.base import RunRequest, RunResult
from dify_sandbox.executors.zygote.isolation import Isolation
from dify_sandbox.executors.zygote.protocol import FLAG_NETWORK, FRAME_BYTES, READY_EVENT, Frame, Op, spawn_value
from dify_sandbox.executors.zygote.run_state import RunState
from dify_sandbox.logging import detached_context
from dify_sandbox.metrics import SandboxMetrics
from dify_sandbox.packages.layout import PackageDir
from dify_sandbox.run_uids import RunUids, kill_uids

__all__ = ["ZygoteExecutor", "ZygoteProcess"]

logger = structlog.get_logger("dify_sandbox.executors.zygote")

READY_TIMEOUT = 120.0  # preloading heavy packages (pandas, torch) can take a while
RESTART_WAIT = 30.0  # how long a run waits for a dead zygote to come back
PING_INTERVAL = 10.0
PING_TIMEOUT = 5.0
# After the child exits, its group is killed; only an escaped process could keep a pipe open.
EOF_GRACE = 0.5
_RESTART_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0)


class ZygoteProcess:
    """One zygote process: its socket, its in-flight runs, and the frames between them."""

    def __init__(
        self,
        settings: Settings,
        preload_modules: list[str],
        on_death: Callable[[ZygoteProcess], None],
        confinement: Confinement | None = None,
        uids: RunUids | None = None,
        disk: DiskBudget | None = None,
    ):
        self.settings = settings
        self.preload_modules = preload_modules
        self.confinement = confinement
        self.uids = uids
        self.disk = disk or DiskBudget(0)
        self.run_root = ""
        self._run_uids: dict[int, int] = {}  # run id -> its own uid, until the zygote reports the exit
        self._on_death = on_death
        self._loop = asyncio.get_running_loop()
        self._runs: dict[int, RunState] = {}
        self._ids = itertools.count(1)
        self._outbox: list[tuple[bytes, list[int]]] = []
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._pongs: dict[int, asyncio.Future[None]] = {}
        self._sock: socket.socket | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.pid: int | None = None
        self.isolation: Isolation | None = None
        self.alive = False
        self.idle = asyncio.Event()
        self.idle.set()
        self._log_task: asyncio.Task[None] | None = None

    def _package_paths(self) -> list[str]:
        """The package dir's import paths, which the worker appended to its sys.path."""
        if self.settings.packages_dir is None:
            return []
        packages = PackageDir(self.settings.packages_dir)
        return [path for path in sys.path if path and packages.contains(path)]

    async def start(self) -> None:
        """Starts the zygote as a fresh interpreter and waits until it has preloaded its modules."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.run_root = tempfile.mkdtemp(
            prefix="dify-sandbox-", dir=self.settings.run_dir or Path(tempfile.gettempdir())
        )
        config = {
            "socket_fd": theirs.fileno(),
            "run_root": self.run_root,
            "preload_modules": self.preload_modules,
            "package_paths": self._package_paths(),
            "env_online": self.settings.run_environment(enable_network=True),
            "env_offline": self.settings.run_environment(enable_network=False),
            "limits": RunLimits.from_settings(self.settings).to_dict(),
            "uid_range": (self.uids.first, self.uids.last) if self.uids is not None else None,
            "confinement": self.confinement.to_dict() if self.confinement is not None else None,
        }
        env = self.settings.run_environment(enable_network=True)
        if "PYTHONPATH" in os.environ:
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-P",
                "-m",
                "dify_sandbox.executors.zygote",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,  # a Ctrl-C on the terminal must not reach it before the drain
                env=env,
            )
        except OSError as exc:
            ours.close()
            shutil.rmtree(self.run_root, ignore_errors=True)
            raise ZygoteUnavailableError(f"cannot start the zygote: {exc}") from exc
        finally:
            theirs.close()
        self.pid = self.process.pid
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(config).encode())
        self.process.stdin.close()
        self._sock = ours
        ours.setblocking(False)
        self.alive = True
        # A request may start this zygote (a re-warm): its start-up lines carry that request's id,
        # but its socket's callbacks and its later lines live on in a context without it.
        starting = contextvars.copy_context()
        detached = detached_context()
        detached.run(self._loop.add_reader, ours.fileno(), self._on_readable)
        self._log_task = asyncio.create_task(self._relay_logs(starting), context=detached)
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), READY_TIMEOUT)
        except TimeoutError:
            await self.close(timeout=0)
            raise ZygoteUnavailableError(f"the zygote did not become ready within {READY_TIMEOUT:.0f} s") from None
        except ZygoteUnavailableError:
            await self.close(timeout=0)
            raise ZygoteUnavailableError("the zygote exited during start-up (see its log lines)") from None
        except asyncio.CancelledError:  # the worker closes while this zygote starts (a respawn, a background re-warm)
            await self.close(timeout=0)  # killed, waited for, its run root removed: nothing outlives the worker
            raise

    async def run(self, request: RunRequest, preload: str) -> RunResult:
        """Runs one snippet in a child forked by this zygote."""
        if not self.alive:
            raise ZygoteUnavailableError("the zygote is not running")
        loop = self._loop
        uid = None
        if self.uids is not None and self.isolation is not None and self.isolation.per_run_uids:
            uid = self.uids.acquire()
            if uid is None:
                raise ExecutorError("no free run uid: every uid of SANDBOX_RUN_UIDS for this worker is in use")
        run_id = next(self._ids)
        if uid is not None:
            self._run_uids[run_id] = uid
        run = RunState(loop)
        preload_bytes = preload.encode("utf-8", "surrogatepass")
        payload = preload_bytes + request.code.encode("utf-8", "surrogatepass")
        code_r, code_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        status_r, status_w = os.pipe()
        self._runs[run_id] = run
        self.idle.clear()
        started = loop.time()
        flags = FLAG_NETWORK if request.enable_network else 0
        self._send(
            Frame(Op.SPAWN, run_id, spawn_value(flags, uid), len(preload_bytes)), [code_r, out_w, err_w, status_w]
        )
        limit = self.settings.output_limit_bytes
        run.stdout = PipeReader(loop, out_r, limit, lambda: self.kill_run(run_id), run.maybe_finish)
        run.stderr = PipeReader(loop, err_r, limit, lambda: self.kill_run(run_id), run.maybe_finish)
        run.watch_status(loop, status_r)
        writer = PipeWriter(loop, code_w, payload)
        run.timer = loop.call_later(request.timeout, self._on_timeout, run_id)
        # The child's dir is named after its pid, which it reports as it starts.
        watch = self.disk.watch(
            lambda: os.path.join(self.run_root, f"run-{run.pid}") if run.pid else None,
            lambda: self._on_disk_exceeded(run_id),
        )
        try:
            await run.done
        finally:
            self.disk.unwatch(watch)
            writer.close()
            run.close()
            if run.status is None and self.alive:
                if not run.done.done() or run.error is not None:
                    self.kill_run(run_id)  # cancelled (client gone, shutdown): never leave the child running
                # else: answered on the child's report; the timer stays armed until the zygote reaps it.
            else:
                self._forget(run_id)
        if run.error is not None:
            raise run.error
        return run.result(loop.time() - started)

    def kill_run(self, run_id: int) -> None:
        """Asks the zygote to SIGKILL a run's process group."""
        if self.alive:
            self._send(Frame(Op.KILL, run_id), [])

    def kill_all(self) -> None:
        """Kills every in-flight run (the shutdown grace has run out); their results say so."""
        for run_id, run in list(self._runs.items()):
            if not run.done.done():
                run.killed_at_shutdown = True
            self.kill_run(run_id)

    async def ping(self) -> None:
        """Round-trips a PING frame; raises TimeoutError if the zygote does not answer."""
        nonce = next(self._ids)
        pong: asyncio.Future[None] = self._loop.create_future()
        self._pongs[nonce] = pong
        self._send(Frame(Op.PING, value=nonce), [])
        try:
            await asyncio.wait_for(pong, PING_TIMEOUT)
        finally:
            self._pongs.pop(nonce, None)

    def kill(self) -> None:
        """SIGKILLs the zygote; the socket's EOF then fails its runs and triggers a respawn."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGKILL)

    async def close(self, timeout: float = 5.0) -> None:
        """Stops the zygote: closing the socket makes it kill its runs and exit."""
        self._shutdown(ZygoteUnavailableError("the zygote was stopped during the run"))
        if self.process is not None:
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                logger.warning("Zygote did not stop in time; killing it", zygote_pid=self.pid)
                self.kill()
                await self.process.wait()
        if self._log_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._log_task
        if self.run_root:
            # The zygote removes its run dirs as it exits; one killed first (or during start-up) cannot.
            shutil.rmtree(self.run_root, ignore_errors=True)

    async def retire(self) -> None:
        """Closes this zygote once its in-flight runs are done (after a rewarm)."""
        await self.idle.wait()
        await self.close()

    # --- frames --------------------------------------------------------------------------------

    def _send(self, frame: Frame, fds: list[int]) -> None:
        # The outbox owns the fds until they are sent; the child gets its own copies.
        self._outbox.append((frame.pack(), fds))
        if len(self._outbox) == 1:
            self._flush_outbox()

    def _flush_outbox(self) -> None:
        sock = self._sock
        while self._outbox:
            data, fds = self._outbox[0]
            if sock is None or not self.alive:
                break
            try:
                socket.send_fds(sock, [data], fds) if fds else sock.send(data)
            except BlockingIOError:
                self._loop.add_writer(sock.fileno(), self._on_writable)
                return
            except OSError:
                self._shutdown(ZygoteUnavailableError("lost the connection to the zygote"))
                return
            self._outbox.pop(0)
            _close_fds(fds)
        if sock is not None and not self._outbox:
            self._loop.remove_writer(sock.fileno())

    def _on_writable(self) -> None:
        self._flush_outbox()

    def _on_readable(self) -> None:
        sock = self._sock
        while sock is not None:
            try:
                data = sock.recv(FRAME_BYTES)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._shutdown(ZygoteUnavailableError("the zygote process died during the run; it is being restarted"))
                return
            try:
                self._dispatch(Frame.unpack(data))
            except ProtocolError as exc:
                logger.error("Bad frame from zygote; stopping it", zygote_pid=self.pid, error=str(exc))
                self.kill()
                return

    def _dispatch(self, frame: Frame) -> None:
        if frame.op == Op.READY:
            self.isolation = Isolation.from_bits(frame.run_id)
            if not self._ready.done():
                self._ready.set_result(None)
            return
        if frame.op == Op.PONG:
            pong = self._pongs.get(frame.value)
            if pong is not None and not pong.done():
                pong.set_result(None)
            return
        run = self._runs.get(frame.run_id)
        if run is None:
            return  # the run was cancelled and forgotten; its late frames carry nothing we need
        if frame.op == Op.EXITED:
            run.status = frame.aux
            if run.done.done():
                self._forget(frame.run_id)  # answered earlier on the child's report
                return
            run.drain_status()
            run.maybe_finish()
            if not run.done.done():
                self._loop.call_later(EOF_GRACE, run.finish)
        elif frame.op == Op.FAILED:
            run.fail(ExecutorError(f"could not start the run: {os.strerror(frame.aux)}"))
        else:
            raise ProtocolError(f"unexpected frame {frame.op!r}")

    def _on_timeout(self, run_id: int) -> None:
        run = self._runs.get(run_id)
        if run is None or run.status is not None:
            return
        if not run.done.done():
            run.timed_out = True
        # Also after an answer given on the child's report: a snippet that forged one still dies on time.
        self.kill_run(run_id)

    def _on_disk_exceeded(self, run_id: int) -> None:
        run = self._runs.get(run_id)
        if run is not None and not run.done.done():
            run.disk_limited = True
            self.kill_run(run_id)

    def _forget(self, run_id: int) -> None:
        run = self._runs.pop(run_id, None)
        if run is not None and run.timer is not None:
            run.timer.cancel()
        uid = self._run_uids.pop(run_id, None)
        if uid is not None and self.uids is not None:
            if run is None or run.status is None:
                kill_uids(uid, uid)  # the zygote did not report the exit (it died): nothing else will
            self.uids.release(uid)
        if not self._runs:
            self.idle.set()

    def _shutdown(self, error: ZygoteUnavailableError) -> None:
        """Tears down the connection: fails in-flight runs, kills their groups, drops queued fds."""
        if not self.alive:
            return
        self.alive = False
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._loop.remove_writer(self._sock.fileno())
            self._sock.close()
            self._sock = None
        for _, fds in self._outbox:
            _close_fds(fds)
        self._outbox.clear()
        if not self._ready.done():
            self._ready.set_exception(error)
            self._ready.exception()  # mark retrieved: start() may already have given up
        for run_id, run in list(self._runs.items()):
            if run.pid is not None:
                kill_group(run.pid)  # its zygote is gone: the worker is the only one left to do it
            if run.done.done():
                self._forget(run_id)  # already answered; only its bookkeeping was left
            else:
                run.fail(error)
        self._on_death(self)

    async def _relay_logs(self, starting: contextvars.Context) -> None:
        """Re-logs the zygote's JSON log lines through our logging; those of its start-up in ``starting``."""
        assert self.process is not None
        assert self.process.stderr is not None
        context: contextvars.Context | None = starting
        async for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            try:
                record = json.loads(line)
                event = str(record.pop("event"))
                level = str(record.pop("level", "info"))
            except (ValueError, KeyError, AttributeError):
                event, level, record = "Zygote output", "warning", {"line": line}
            if context is None:
                logger.log(_LEVELS.get(level, 20), event, zygote_pid=self.pid, **record)
                continue
            context.run(logger.log, _LEVELS.get(level, 20), event, zygote_pid=self.pid, **record)
            if event == READY_EVENT:
                context = None


_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class ZygoteExecutor:
    """The fork executor: every run is a fresh child of a warm zygote (see ``README.md`` here)."""

    def __init__(self, settings: Settings, metrics: SandboxMetrics | None = None, uids: RunUids | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.uids = uids
        self.disk = DiskBudget(settings.max_disk_bytes)
        self.confinement = self._plan()
        self._zygote: ZygoteProcess | None = None
        self._retiring: set[ZygoteProcess] = set()
        self._restart: asyncio.Task[None] | None = None
        self._ping: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.restarts = 0
        self.unhealthy = False  # a dead zygote is replaced here; the worker itself stays healthy

    async def start(self) -> None:
        """Starts the first zygote and its health ping.

        The requirement files' packages (pandas takes seconds to import) are preloaded by a second
        zygote started in the background, so the worker serves from its first second.
        """
        deferred = len(self._preload_modules()) > len(self.settings.preload_modules)
        self._zygote = await self._spawn(list(self.settings.preload_modules) if deferred else None)
        self._ping = asyncio.create_task(self._ping_forever())
        if deferred:
            task = asyncio.create_task(self._warm_in_background())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _warm_in_background(self) -> None:
        try:
            await self.rewarm()
        except ExecutorError as exc:
            logger.warning("Preloading the requirements failed; runs import them themselves", error=str(exc))

    async def run(self, request: RunRequest) -> RunResult:
        """Runs one snippet; raises :class:`ZygoteUnavailableError` if no zygote can be had."""
        zygote = await self._live_zygote()
        preload = request.preload if self.settings.enable_preload else ""
        return await zygote.run(request, preload)

    async def rewarm(self) -> None:
        """Starts a zygote with the current package list, then retires the old one once it is idle."""
        self.confinement = self._plan()  # the package dir may be new since start: runs must read it
        fresh = await self._spawn()
        old, self._zygote = self._zygote, fresh
        if old is not None:
            self._retire(old)

    async def kill_all(self) -> None:
        """Kills the runs of every zygote."""
        for zygote in self._zygotes():
            zygote.kill_all()

    async def close(self) -> None:
        """Stops every zygote; their runs are killed with them."""
        self._closing = True
        for task in (self._ping, self._restart):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await asyncio.gather(*(zygote.close() for zygote in self._zygotes()))
        self.disk.close()
        for task in list(self._tasks):
            task.cancel()

    @property
    def isolation(self) -> Isolation | None:
        """What isolates runs in the current zygote (None while none is running)."""
        return self._zygote.isolation if self._zygote is not None else None

    def _plan(self) -> Confinement | None:
        """Landlock and seccomp for runs; the package dir is readable and executable, never writable."""
        run_root = str(self.settings.run_dir or tempfile.gettempdir())
        packages = [str(self.settings.packages_dir)] if self.settings.packages_dir else []
        return plan_for(self.settings.isolation, [run_root, os.getcwd()], *packages)

    def _zygotes(self) -> list[ZygoteProcess]:
        current = [self._zygote] if self._zygote is not None else []
        return current + list(self._retiring)

    def _preload_modules(self) -> list[str]:
        modules = list(self.settings.preload_modules)
        if self.settings.preload_requirements:
            extra = import_names(read_requirements(self.settings.requirements_files))
            modules += [name for name in extra if name not in modules]
        return modules

    async def _spawn(self, modules: list[str] | None = None) -> ZygoteProcess:
        modules = self._preload_modules() if modules is None else modules
        zygote = ZygoteProcess(self.settings, modules, self._handle_death, self.confinement, self.uids, self.disk)
        await zygote.start()
        return zygote

    def _retire(self, zygote: ZygoteProcess) -> None:
        self._retiring.add(zygote)
        task = asyncio.create_task(zygote.retire())
        self._tasks.add(task)
        task.add_done_callback(lambda _: self._retiring.discard(zygote))
        task.add_done_callback(self._tasks.discard)

    def _handle_death(self, zygote: ZygoteProcess) -> None:
        if self._closing or zygote is not self._zygote:
            return
        logger.error("Zygote died; restarting it", zygote_pid=zygote.pid)
        self._retire(zygote)  # reaps the process
        self._zygote = None
        if self._restart is None or self._restart.done():
            self._restart = asyncio.create_task(self._respawn())

    async def _respawn(self) -> None:
        for attempt in itertools.count():
            try:
                self._zygote = await self._spawn()
            except ExecutorError as exc:
                delay = _RESTART_BACKOFF[min(attempt, len(_RESTART_BACKOFF) - 1)]
                logger.error("Zygote restart failed", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                continue
            self.restarts += 1
            if self.metrics is not None:
                self.metrics.executor_restarts.labels(executor="zygote").inc()
            logger.info("Zygote restarted", zygote_pid=self._zygote.pid, restarts=self.restarts)
            return

    async def _live_zygote(self) -> ZygoteProcess:
        if self._zygote is not None and self._zygote.alive:
            return self._zygote
        if self._restart is not None and not self._restart.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._restart), RESTART_WAIT)
        if self._zygote is None or not self._zygote.alive:
            raise ZygoteUnavailableError("the zygote is restarting; try again shortly")
        return self._zygote

    async def _ping_forever(self) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL)
            zygote = self._zygote
            if zygote is None or not zygote.alive:
                continue
            try:
                await zygote.ping()
            except TimeoutError:
                logger.error("Zygote did not answer a ping; killing it", zygote_pid=zygote.pid)
                zygote.kill()
