"""Logging, configured once per process: structlog for our events, the same renderer for stdlib/uvicorn.

Text for people by default, JSON lines with ``SANDBOX_LOG_FORMAT=json``. ``merge_contextvars``
comes first so a ``request_id`` bound for a request lands on every line of that request.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from dify_sandbox.config import LogFormat

__all__ = ["configure_logging", "log_file_for"]


def _add_pid(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    event_dict.setdefault("pid", os.getpid())
    return event_dict


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
    """Routes structlog and stdlib logging (uvicorn included) through one formatter to stderr (and a file)."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _add_pid,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        # Plain tracebacks: the rich formatter (used when rich is installed) renders locals with
        # syntax highlighting on the event loop and can block a worker for seconds.
        renderer = structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(log_file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
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
