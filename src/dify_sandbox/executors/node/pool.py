"""The Node.js executor: a warm pool of ``node`` processes, each waiting for exactly one snippet.

A process is never reused: the run that takes it gets a fresh interpreter, and a replacement is
started in the background, with ``vfork`` (``_spawned.py``) so the event loop does not wait while
the worker's memory is copied. When the pool is empty a run starts its own process at once instead
of waiting. Every process has its own process group, the scrubbed environment, its own working
dir (also HOME and TMPDIR), and gets its code on a pipe. A timeout kills the whole group, and so
does the end of a run, so nothing it spawned outlives it. The rlimits of ``_rlimits.py`` are set
with ``prlimit`` while the process still waits for its code. Children that left the group
(``detached: true``, ``setsid``) are found when the run ends (``leftovers.py``): as leftovers of a
confined run that the worker, a subreaper, inherited, or by the run dir in their environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import structlog

from dify_sandbox._prctl import become_subreaper
from dify_sandbox._procfs import kill_group
from dify_sandbox.config import Settings
from dify_sandbox.confinement.launch import launcher_argv
from dify_sandbox.confinement.policy import Confinement, plan_for
from dify_sandbox.errors import ExecutorError
from dify_sandbox.executors._disk_budget import DiskBudget
from dify_sandbox.executors._pipes import PipeReader, PipeWriter
from dify_sandbox.executors._rlimits import RunLimits
from dify_sandbox.executors._run_root import RunRoot
from dify_sandbox.executors._spawned import SpawnedProcess
from dify_sandbox.executors.base import RunRequest, RunResult
from dify_sandbox.executors.node.leftovers import kill_by_environment, kill_confined_orphans, reap
from dify_sandbox.executors.outcome import RunOutcome
from dify_sandbox.metrics import SandboxMetrics
from dify_sandbox.run_uids import RunUids, kill_uids
from dify_sandbox.runtimes.nodejs import BOOTSTRAP, NodeBinary, find_node, pinned_node_version

__all__ = ["NodePool"]

logger = structlog.get_logger("dify_sandbox.executors.node_pool")

EOF_GRACE = 0.5
PROBE_TIMEOUT = 10.0


@dataclass(slots=True, eq=False)
class _Node:
    """One started node process and the worker's ends of its pipes."""

    process: SpawnedProcess
    code_w: int
    stdout_r: int
    stderr_r: int
    run_dir: str
    uid: int | None  # its own uid (service started as root)
    killed_at_shutdown: bool = False  # its run was still going when the shutdown grace ran out

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill_group(self) -> None:
        """SIGKILLs the process and everything in its group."""
        kill_group(self.process.pid)

    def discard(self) -> None:
        """Closes the worker's pipe ends (an unused pooled process)."""
        for fd in (self.code_w, self.stdout_r, self.stderr_r):
            with contextlib.suppress(OSError):
                os.close(fd)


def _clean_up_after(run_dir: str, uid: int | None, orphans: list[int]) -> None:
    """Kills what a run left outside its group (by uid, else by environment), reaps ``orphans``, removes its dir."""
    reap(orphans)
    if uid is not None:
        kill_uids(uid, uid)
    kill_by_environment(f"TMPDIR={run_dir}")
    shutil.rmtree(run_dir, ignore_errors=True)


def _log_restored(path: str) -> None:
    logger.warning("A run changed the run root's mode; restored", path=path)


def _unusable_for(node: str, run_root: str, uid: int) -> str | None:
    """Why ``node`` cannot run as ``uid`` with its bootstrap and a dir under ``run_root`` (None: it can).

    Per-run users need node, the bootstrap and the run root to be reachable by other users; a run
    root under a private dir (or a node under /root) is not.
    """
    probe = f"require('fs').accessSync({json.dumps(str(BOOTSTRAP))}); process.chdir({json.dumps(run_root)})"
    try:
        subprocess.run(
            [node, "-e", probe],
            user=uid,
            group=uid,
            extra_groups=[],
            cwd="/",
            capture_output=True,
            timeout=PROBE_TIMEOUT,
            check=True,
        )
    except subprocess.CalledProcessError as exc:
        lines = exc.stderr.decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else f"exit status {exc.returncode}"
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    return None


class NodePool:
    """Runs nodejs snippets in pre-started node processes."""

    def __init__(self, settings: Settings, metrics: SandboxMetrics | None = None, uids: RunUids | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.uids = uids
        self.size = settings.node_pool_size
        self.limits = RunLimits.from_settings(settings)
        self.disk = DiskBudget(settings.max_disk_bytes)
        self.unhealthy = False
        self.binary: NodeBinary | None = None
        self._error: ExecutorError | None = None
        self._idle: deque[_Node] = deque()
        self._busy: set[_Node] = set()
        self._unreaped: set[int] = set()  # pids of the node processes started and not yet reaped
        self._refills: set[asyncio.Task[None]] = set()
        self._run_root: RunRoot | None = None
        self._closing = False
        self.spawned = 0
        self.confinement: Confinement | None = None

    async def start(self) -> None:
        """Finds node and fills the pool; without node, nodejs runs fail clearly and python3 is unaffected."""
        loop = asyncio.get_running_loop()
        try:
            self.binary = await loop.run_in_executor(None, find_node, self.settings.nodejs_path)
        except ExecutorError as exc:
            self._error = exc
            logger.error("Node.js unavailable; nodejs runs will fail", error=str(exc))
            return
        root = self.settings.run_dir or Path(tempfile.gettempdir())
        self._run_root = RunRoot(tempfile.mkdtemp(prefix="dify-sandbox-node-", dir=root), _log_restored)
        self._run_root.create(per_run_uids=self.uids is not None)
        if self.uids is not None:
            problem = await loop.run_in_executor(
                None, _unusable_for, self.binary.path, self._run_root.root, self.uids.first
            )
            if problem is not None:
                logger.warning("Per-run users disabled for Node.js: node cannot work as them", problem=problem)
                self.uids = None
        node_dir = os.path.dirname(os.path.realpath(self.binary.path))
        self.confinement = plan_for(self.settings.isolation, [str(root), os.getcwd()], node_dir, str(BOOTSTRAP))
        if self.confinement is not None and not become_subreaper():
            logger.warning("Leftovers of Node.js runs are found by their environment only: not a subreaper")
        logger.info("Node.js found", path=self.binary.path, version=self.binary.version, source=self.binary.source)
        pinned = pinned_node_version()
        if pinned is not None and self.binary.source != "wheel" and self.binary.major != pinned.split(".", 1)[0]:
            logger.warning("Node.js is not the pinned major version", version=self.binary.version, pinned=pinned)
        try:
            for _ in range(self.size):
                self._idle.append(await self._spawn())
        except ExecutorError as exc:
            self._error = exc
            logger.error("Node.js processes cannot start; nodejs runs will fail", error=str(exc))
            return
        self._publish()
        logger.info("Node pool ready", pool_size=len(self._idle))

    async def run(self, request: RunRequest) -> RunResult:
        """Runs one snippet in a pooled process (or a fresh one when the pool is empty)."""
        if self._error is not None:
            raise self._error
        if not request.enable_network and self.confinement is not None:
            node = await self._spawn(network=False)  # pooled processes are confined for the network
        else:
            node = await self._take_idle() or await self._spawn()
        self._publish()
        self._refill()
        self._busy.add(node)
        try:
            return await self._run_in(node, request)
        finally:
            self._busy.discard(node)
            await self._clean_up(node)

    async def _take_idle(self) -> _Node | None:
        """A pooled process still waiting for its code; one that died waiting (its launch failed) is dropped."""
        while self._idle:
            node = self._idle.popleft()
            if not node.process.exited:
                return node
            logger.warning(
                "A pooled node process had exited; dropped", pid=node.pid, exit_code=await node.process.wait()
            )
            await self._stop(node)
        return None

    async def _run_in(self, node: _Node, request: RunRequest) -> RunResult:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        state = {"exited": False, "timed_out": False, "disk_limited": False}

        def maybe_finish() -> None:
            if state["exited"] and stdout.eof and stderr.eof and not done.done():
                done.set_result(None)

        limit = self.settings.output_limit_bytes
        stdout = PipeReader(loop, node.stdout_r, limit, node.kill_group, maybe_finish)
        stderr = PipeReader(loop, node.stderr_r, limit, node.kill_group, maybe_finish)
        preload = request.preload + "\n" if self.settings.enable_preload and request.preload else ""
        header = json.dumps({"network": request.enable_network})
        writer = PipeWriter(loop, node.code_w, f"{header}\n{preload}{request.code}".encode("utf-8", "surrogatepass"))
        started = loop.time()

        def on_timeout() -> None:
            state["timed_out"] = True
            node.kill_group()

        timer = loop.call_later(request.timeout, on_timeout)

        def on_disk_exceeded() -> None:
            state["disk_limited"] = True
            node.kill_group()

        watch = self.disk.watch(lambda: node.run_dir, on_disk_exceeded)
        try:
            returncode = await node.process.wait()
            state["exited"] = True
            node.kill_group()  # whatever the snippet left running in its group
            maybe_finish()
            if not done.done():
                await asyncio.wait([done], timeout=EOF_GRACE)
        finally:
            self.disk.unwatch(watch)
            timer.cancel()
            writer.close()
            stdout.close()
            stderr.close()
        outcome = RunOutcome.observed(
            returncode,
            timed_out=state["timed_out"],
            output_limited=stdout.limited or stderr.limited,
            disk_limited=state["disk_limited"],
            at_shutdown=node.killed_at_shutdown,
        )
        return RunResult(stdout.text(), stderr.text(), outcome, loop.time() - started, node.pid)

    async def _spawn(self, network: bool = True) -> _Node:
        assert self.binary is not None
        uid = None
        if self.uids is not None:
            uid = self.uids.acquire()
            if uid is None:
                raise ExecutorError("no free run uid: every uid of SANDBOX_RUN_UIDS for this worker is in use")
        try:
            return await self._start(network, uid)
        except BaseException:
            if uid is not None and self.uids is not None:
                self.uids.release(uid)
            raise

    async def _start(self, network: bool, uid: int | None) -> _Node:
        assert self.binary is not None
        assert self._run_root is not None
        run_root = self._run_root
        run_dir = run_root.make_dir()
        if uid is not None:
            os.chown(run_dir, uid, uid)
        env = self.settings.run_environment(enable_network=True)
        env["HOME"] = env["TMPDIR"] = run_dir
        code_r, code_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        argv = [self.binary.path, str(BOOTSTRAP), str(code_r)]
        if self.confinement is not None or uid is not None:
            argv = launcher_argv(self.confinement, network, uid, argv)
        try:
            process = run_root.retrying(  # it starts in its dir, through the root
                lambda: SpawnedProcess.start(argv, stdout=out_w, stderr=err_w, pass_fds=(code_r,), cwd=run_dir, env=env)
            )
        except OSError as exc:
            for fd in (code_w, out_r, err_r):
                os.close(fd)
            shutil.rmtree(run_dir, ignore_errors=True)
            raise ExecutorError(f"cannot start node: {exc}") from exc
        finally:
            for fd in (code_r, out_w, err_w):
                os.close(fd)
        self.spawned += 1
        self._unreaped.add(process.pid)
        node = _Node(process, code_w, out_r, err_r, run_dir, uid)
        try:
            # The process is still waiting for its code, so the limits are in place before any of it runs.
            self.limits.apply(per_run_uid=uid is not None, pid=process.pid)
        except OSError as exc:
            await self._stop(node)
            raise ExecutorError(f"cannot limit the node process: {exc}") from exc
        return node

    def _refill(self) -> None:
        """Tops the pool up in the background."""
        if self._closing or len(self._idle) + len(self._refills) >= self.size:
            return
        task = asyncio.create_task(self._add_one())
        self._refills.add(task)
        task.add_done_callback(self._refills.discard)

    async def _add_one(self) -> None:
        try:
            node = await self._spawn()
        except ExecutorError as exc:
            logger.error("Node pool refill failed", error=str(exc))
            return
        if self._closing:
            await self._stop(node)
            return
        self._idle.append(node)
        self._publish()
        logger.debug("Node pool refilled", pool_size=len(self._idle), spawned=self.spawned)

    def _publish(self) -> None:
        if self.metrics is not None:
            self.metrics.node_pool_idle.set(len(self._idle))

    async def _stop(self, node: _Node) -> None:
        node.discard()
        await self._clean_up(node)

    async def _clean_up(self, node: _Node) -> None:
        """Kills the node's group, waits for it, sweeps what its run left elsewhere, frees its dir and uid."""
        node.kill_group()
        await node.process.wait()
        self._unreaped.discard(node.pid)
        orphans = kill_confined_orphans(self._unreaped) if self.confinement is not None else []
        if self._run_root is not None:
            self._run_root.restore_mode()  # a run may have changed it, and its dir is removed through it
        await asyncio.get_running_loop().run_in_executor(None, _clean_up_after, node.run_dir, node.uid, orphans)
        self._release(node)

    def _release(self, node: _Node) -> None:
        if node.uid is not None and self.uids is not None:
            self.uids.release(node.uid)

    async def rewarm(self) -> None:
        """Nothing to re-warm: every run starts a fresh node."""

    async def kill_all(self) -> None:
        """Kills every running snippet's process group (the shutdown grace has run out); their results say so."""
        for node in list(self._busy):
            node.killed_at_shutdown = True
            node.kill_group()

    async def close(self) -> None:
        """Stops every node process, idle or running; none survives."""
        self._closing = True
        if self._run_root is None and not self.spawned:
            return  # never started (``dify-sandbox run`` of a Python file, or no node): nothing to stop
        for task in list(self._refills):
            task.cancel()
        await asyncio.gather(*self._refills, return_exceptions=True)
        await self.kill_all()
        self.disk.close()
        idle = list(self._idle)
        self._idle.clear()
        await asyncio.gather(*(self._stop(node) for node in idle))
        for node in list(self._busy):
            await node.process.wait()
        if self._run_root is not None:
            self._run_root.remove_all()
        logger.info("Node pool stopped", spawned=self.spawned)
