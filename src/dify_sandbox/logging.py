"""Logging, configured once per process: structlog for our events, the same renderer for stdlib/uvicorn.

``key='value'`` text for people by default, JSON lines with ``SANDBOX_LOG_FORMAT=json``. ``merge_contextvars``
comes first so a ``request_id`` bound for a request lands on every line of that request.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import logging.handlers
import os
import select
from pathlib import Path

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from dify_sandbox.config import LogFormat

__all__ = ["REQUEST_BINDINGS", "BatchedLineHandler", "configure_logging", "detached_context", "log_file_for"]

# What is bound for one request only (``api/middleware.py``); ``worker`` is bound for the process.
REQUEST_BINDINGS = ("request_id",)


def detached_context() -> contextvars.Context:
    """A copy of the current context without the request's bindings, for work that outlives the request.

    Tasks and loop callbacks inherit the context they are created in (PEP 567): a helper process a
    request starts (the zygote a re-warm brings up) would otherwise log that request's id for life.
    """
    context = contextvars.copy_context()
    context.run(structlog.contextvars.unbind_contextvars, *REQUEST_BINDINGS)
    return context


class BatchedLineHandler(logging.Handler):
    """Writes lines to a file descriptor: at once outside an event loop, once per loop iteration inside one.

    A worker logs a line per run; one ``write`` each was about a quarter of a thread-executor run's
    cost under load. The lines of one loop iteration go out together in a callback queued right
    after them, a few microseconds later, in writes of whole lines no larger than ``PIPE_BUF`` so
    that workers sharing a pipe never interleave inside a line.
    """

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self._pending: list[bytes] = []
        self._flush_queued_on: asyncio.AbstractEventLoop | None = None
        # A process forked from this one (a thread-executor snippet may fork) must not write these again.
        os.register_at_fork(after_in_child=self._pending.clear)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.write_line(line)

    def write_line(self, line: str) -> None:
        """Writes one rendered line, or queues it until the end of this loop iteration."""
        data = (line + "\n").encode("utf-8", "backslashreplace")
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self.acquire()
        try:
            self._pending.append(data)
            if loop is None:
                self._write_pending()
            elif self._flush_queued_on is not loop:
                self._flush_queued_on = loop
                loop.call_soon(self.flush)
        finally:
            self.release()

    def flush(self) -> None:
        self.acquire()
        try:
            self._flush_queued_on = None
            self._write_pending()
        finally:
            self.release()

    def _write_pending(self) -> None:
        lines, self._pending = self._pending, []
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            if chunk and size + len(line) > select.PIPE_BUF:
                self._write(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            self._write(b"".join(chunk))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError:
            pass  # nowhere left to report it; logging must never take the worker down


# Set on a LogRecord whose line structlog has rendered already.
_RENDERED = "rendered_line"


class _ForeignFormatter(structlog.stdlib.ProcessorFormatter):
    """Renders the records of stdlib loggers (uvicorn, libraries); a line structlog rendered passes as is."""

    def format(self, record: logging.LogRecord) -> str:
        line = record.__dict__.get(_RENDERED)
        return line if isinstance(line, str) else super().format(record)


class _LineLogger:
    """What our structlog loggers wrap: it hands each rendered line straight to this process's handlers.

    Our own events skip the stdlib ``Logger`` (record, hierarchy, formatter copying the record):
    about half the cost of the line every run logs.
    """

    def __init__(self, name: str, handlers: list[logging.Handler]) -> None:
        self.name = name
        self.handlers = handlers

    def msg(self, line: str) -> None:
        for handler in self.handlers:
            if isinstance(handler, BatchedLineHandler):
                handler.write_line(line)
            else:
                handler.handle(logging.makeLogRecord({"name": self.name, "msg": line, _RENDERED: line}))

    debug = info = warning = error = critical = exception = fatal = msg


def _add_logger_name(logger: WrappedLogger, _: str, event_dict: EventDict) -> EventDict:
    event_dict["logger"] = logger.name
    return event_dict


def _add_pid(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    event_dict.setdefault("pid", os.getpid())
    return event_dict


def _text_renderer() -> Processor:
    """``key='value'`` fields in a fixed order up front, then any traceback on the lines below, as people read one.

    Chosen for its cost: every run logs a line, and structlog's ``ConsoleRenderer`` (a development
    renderer) took about four times as long per line, its ``LogfmtRenderer`` twice as long.
    """
    fields = structlog.processors.KeyValueRenderer(
        key_order=["timestamp", "level", "event", "logger"], drop_missing=True
    )

    def render(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
        traceback = event_dict.pop("exception", None)
        line = fields(logger, method_name, event_dict)
        return line if traceback is None else f"{line}\n{traceback}"

    return render


def log_file_for(path: Path, worker: int | None) -> Path:
    """Each process rotates its own file (rotation is not safe across processes): ``x.log``, ``x.worker-0.log``."""
    return path if worker is None else path.with_name(f"{path.stem}.worker-{worker}{path.suffix}")


def configure_logging(
    level: str = "INFO",
    log_format: LogFormat = "text",
    log_file: Path | None = None,
    max_bytes: int = 50 * 1024 * 1024,
    backups: int = 5,
) -> None:
    """Sends our structlog events and stdlib logging (uvicorn included), rendered alike, to stderr (and a file)."""
    renderer = structlog.processors.JSONRenderer() if log_format == "json" else _text_renderer()
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    handlers: list[logging.Handler] = [BatchedLineHandler(2)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(log_file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_logger_name,
            _add_pid,
            timestamper,
            structlog.processors.format_exc_info,
            renderer,
        ],
        # Methods below the level do nothing at all.
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=lambda name="", *_: _LineLogger(name, handlers),
        cache_logger_on_first_use=True,
    )
    formatter = _ForeignFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            _add_pid,
            timestamper,
            structlog.processors.format_exc_info,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    for handler in handlers:
        handler.setFormatter(formatter)
    # The logging HOWTO's optimisation switches: no field we render needs the caller's frame, thread
    # or process name, and every run logs a line.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers = handlers
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers = []
        uvicorn_logger.propagate = True
