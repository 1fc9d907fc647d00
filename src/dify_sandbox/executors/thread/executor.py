"""The thread executor: snippets run with ``exec`` in a bounded thread pool inside the server worker.

**Not isolated; for trusted code only.** A snippet shares the worker's memory, modules, working
directory and environment (the API key is removed from it at start); ``os._exit`` or a crash in C
code ends the whole worker. What it does give: per-run output capture that never mixes
(``output_capture.py``), fresh ``__main__`` globals, the fork executor's result semantics, and timeouts
that interrupt the runaway thread with an asynchronous exception until it stops. A thread that
cannot be stopped (blocked in C) is counted; past ``SANDBOX_MAX_STUCK_THREADS`` the worker reports
itself unhealthy so it is drained and replaced rather than silently losing capacity.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import linecache
import sys
import threading
import time
import types
from collections import OrderedDict
from typing import Any

import structlog

from dify_sandbox.config import Settings
from dify_sandbox.executors.base import RunRequest, RunResult
from dify_sandbox.executors.outcome import EXIT_KILLED, RunOutcome
from dify_sandbox.executors.thread.output_capture import (
    Capture,
    OutputLimitError,
    current_capture,
    route_logging,
    route_streams,
)
from dify_sandbox.executors.thread.snippet_threads import Job, SnippetThreads
from dify_sandbox.metrics import SandboxMetrics
from dify_sandbox.runtimes.python3 import fresh_main_module, run_snippet

__all__ = ["RunInterruptedError", "ThreadExecutor"]

logger = structlog.get_logger("dify_sandbox.executors.thread")

INTERRUPT_CHECK = 0.1
# Re-raising is only for snippets that catch the interrupt; each raise makes every thread take the
# interpreter's slow path until it is delivered, so it is not repeated more often than this.
INTERRUPT_REPEAT = 1.0
# A thread still running this long after its timeout is declared stuck.
STUCK_AFTER = 5.0
COMPILE_CACHE_SIZE = 256


class RunInterruptedError(BaseException):
    """Raised asynchronously in a run's thread at its timeout (a BaseException, like KeyboardInterrupt)."""


class _CompileCache:
    """Compiled snippets by source, each under its own file name so concurrent tracebacks show their own lines."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, str], types.CodeType] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, source: str, kind: str) -> types.CodeType:
        key = (source, kind)
        with self._lock:
            code = self._entries.get(key)
            if code is not None:
                self._entries.move_to_end(key)
                return code
        digest = hashlib.blake2b(source.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()
        filename = f"{kind[:-1]}:{digest}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
        code = compile(source, filename, "exec")
        with self._lock:
            self._entries[key] = code
            while len(self._entries) > self.size:
                _, old = self._entries.popitem(last=False)
                linecache.cache.pop(old.co_filename, None)
        return code


class ThreadExecutor:
    """Runs snippets in this process's threads. See the module docstring for what it does not isolate."""

    def __init__(self, settings: Settings, metrics: SandboxMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self._threads = SnippetThreads(settings.max_workers, "snippet")
        self._compile = _CompileCache(COMPILE_CACHE_SIZE)
        self._live: dict[Job[int], Capture] = {}  # calls still executing, timed-out ones included
        self.stuck = 0
        self.unhealthy = False  # read by the server: drain and replace this worker
        self._watchers: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> int:
        """Snippet calls still executing, timed-out ones included."""
        return sum(not job.ended for job in list(self._live))

    async def start(self) -> None:
        """Installs the process-wide stream and logging routing."""
        route_streams()
        route_logging()

    async def run(self, request: RunRequest) -> RunResult:
        """Runs the snippet in a pool thread; at the timeout answers at once and interrupts the thread."""
        route_streams()
        loop = asyncio.get_running_loop()
        capture = Capture(self.settings.output_limit_bytes)
        preload = request.preload if self.settings.enable_preload else ""
        started = loop.time()
        job = self._threads.submit(self._execute, request.code, preload, capture)
        self._live[job] = capture
        deadline = loop.call_later(request.timeout, _answer_timeout, job.result)
        try:
            exit_code = await job.result
        except RunInterruptedError:  # delivered just as the snippet ended
            exit_code = EXIT_KILLED
        finally:
            deadline.cancel()
        if exit_code is None:
            if job.withdraw():  # it waited for a thread all along: it must not start late
                self._live.pop(job, None)
            else:
                self._watch(job)
            timeout = RunOutcome.observed(EXIT_KILLED, timed_out=True)
            return RunResult(capture.stdout.text(), capture.stderr.text(), timeout, request.timeout)
        self._live.pop(job, None)
        outcome = RunOutcome.observed(
            exit_code,
            # Interrupted otherwise than by kill_all: only the timeout sends the interrupt.
            timed_out=exit_code == EXIT_KILLED and not (capture.limited or capture.closed),
            output_limited=capture.limited,
            at_shutdown=capture.closed,
        )
        return RunResult(capture.stdout.text(), capture.stderr.text(), outcome, loop.time() - started)

    def _execute(self, code: str, preload: str, capture: Capture) -> int:
        token = current_capture.set(capture)
        try:
            with contextlib.suppress(OutputLimitError, RunInterruptedError):
                # sys.stderr is the routed proxy: inside this context it writes to the run's capture.
                return run_snippet(code, preload, fresh_main_module(), sys.stderr, self._compile).code
            return EXIT_KILLED
        finally:
            current_capture.reset(token)

    def _watch(self, job: Job[int]) -> None:
        task = asyncio.get_running_loop().create_task(self._interrupt_until_stopped(job))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _interrupt_until_stopped(self, job: Job[int]) -> None:
        started = time.monotonic()
        deadline = started + STUCK_AFTER
        next_raise = started
        counted = False
        try:
            while not job.ended:
                now = time.monotonic()
                if not counted and now >= next_raise:
                    job.interrupt(RunInterruptedError)
                    next_raise = now + INTERRUPT_REPEAT
                if not counted and now > deadline:
                    # Blocked in C code: further raises would only slow every other thread.
                    counted = True
                    self.stuck += 1
                    logger.error(
                        "Snippet thread cannot be stopped", thread_ident=job.running_in, stuck_threads=self.stuck
                    )
                    if self.stuck > self.settings.max_stuck_threads and not self.unhealthy:
                        self.unhealthy = True
                        logger.error("Too many stuck threads; this worker will drain and be replaced")
                await asyncio.sleep(INTERRUPT_REPEAT if counted else INTERRUPT_CHECK)
        finally:
            if counted:
                self.stuck -= 1
            self._live.pop(job, None)

    async def rewarm(self) -> None:
        """Nothing to re-warm: new packages are imported on first use by the snippet."""

    async def kill_all(self) -> None:
        """Interrupts every running snippet thread (the shutdown grace has run out); their results say so."""
        for job, capture in list(self._live.items()):
            capture.closed = True  # what the interrupted snippet prints from here on (its traceback) is dropped
            job.interrupt(RunInterruptedError)

    async def close(self) -> None:
        """Stops taking runs; running threads are interrupted and not waited for."""
        await self.kill_all()
        self._threads.close()
        for task in list(self._watchers):
            task.cancel()


def _answer_timeout(result: asyncio.Future[Any]) -> None:
    # None stands for "timed out"; the thread's own value, arriving later, is then dropped.
    if not result.done():
        result.set_result(None)
