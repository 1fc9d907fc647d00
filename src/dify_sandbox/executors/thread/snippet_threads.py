"""The thread executor's pool: a fixed ceiling of threads fed from one queue, answering on the event loop.

``loop.run_in_executor`` wraps every job in a ``concurrent.futures.Future``, a wrapping asyncio future
and their callbacks; for a snippet that runs in tens of microseconds that bookkeeping costs more than
the snippet. Here a job is one small object on a ``SimpleQueue`` and one ``call_soon_threadsafe`` back.

A job can also be interrupted with an asynchronous exception (its timeout). The raise and the job's
end are serialised by a lock, so an interrupt is only ever raised while the job's call runs; one that
arrives as the call returns is delivered at the thread's next bytecode check, which comes before
the job is handed back, and is caught there. It can never reach the next job. (Withdrawing a pending
exception is not an option: CPython 3.11 would leave every thread on its slow path for good.)
"""

from __future__ import annotations

import asyncio
import ctypes
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Job", "SnippetThreads"]

T = TypeVar("T")


class Job(Generic[T]):
    """One call queued or running on a pool thread.

    ``result`` is settled on the event loop when the call returns, unless its owner settled it first
    (a timeout answer); ``ended`` tells whether the call has returned or was withdrawn unstarted.
    """

    __slots__ = ("_lock", "args", "ended", "function", "result", "running_in")

    def __init__(self, function: Callable[..., T], args: tuple[object, ...], result: asyncio.Future[T]) -> None:
        self.function = function
        self.args = args
        self.result = result
        self.running_in: int | None = None  # the thread ident while the call runs
        self.ended = False  # the call has returned (``result`` may have been settled earlier, at a timeout)
        self._lock = threading.Lock()

    def interrupt(self, exc_type: type[BaseException]) -> bool:
        """Raises ``exc_type`` in the job's thread if the call is still running; False once it has ended."""
        with self._lock:
            if self.running_in is None:
                return False
            _set_async_exc(self.running_in, exc_type)
            return True

    def withdraw(self) -> bool:
        """Makes a job that no thread has started yet never start (its owner gave up); False if it has."""
        with self._lock:
            if self.running_in is not None or self.ended:
                return False
            self.ended = True
            return True

    def run(self) -> tuple[T | None, BaseException | None]:
        ident = threading.get_ident()
        with self._lock:
            if self.ended:  # withdrawn while it waited in the queue
                return None, None
            self.running_in = ident
        try:
            return self.function(*self.args), None
        except BaseException as exc:  # handed to the awaiting coroutine, which decides
            return None, exc
        finally:
            with self._lock:
                self.running_in = None
                self.ended = True


class SnippetThreads:
    """Up to ``size`` threads, started as the number of unfinished jobs grows."""

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self._jobs: queue.SimpleQueue[Job[object] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._unfinished = 0  # changed only on the event loop's thread
        self._closed = False

    def submit(self, function: Callable[..., T], *args: object) -> Job[T]:
        """Queues ``function(*args)``; await ``job.result`` for its value."""
        if self._closed:
            raise RuntimeError("the snippet threads are closed")
        loop = asyncio.get_running_loop()
        job: Job[T] = Job(function, args, loop.create_future())
        self._unfinished += 1
        self._jobs.put(job)  # type: ignore[arg-type]  # the queue holds jobs of any result type
        if self._unfinished > len(self._threads) and len(self._threads) < self.size:
            thread = threading.Thread(
                target=self._work, args=(loop,), name=f"{self.name}-{len(self._threads)}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return job

    def _resolve(self, job: Job[object], value: object, error: BaseException | None) -> None:
        # On the loop, once the call has returned; ``result`` may already hold a timeout answer.
        self._unfinished -= 1
        if job.result.done():
            return
        if error is not None:
            job.result.set_exception(error)
        else:
            job.result.set_result(value)

    def _work(self, loop: asyncio.AbstractEventLoop) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                value, error = job.run()
            except BaseException as exc:  # an interrupt delivered just as the call returned
                value, error = None, exc
            try:
                loop.call_soon_threadsafe(self._resolve, job, value, error)
            except RuntimeError:  # the loop is closed: nobody waits for this job any more
                return

    def close(self) -> None:
        """Lets every idle thread exit; running ones exit when their job ends. Does not wait."""
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)


def _set_async_exc(ident: int, exc_type: type[BaseException]) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc_type))
