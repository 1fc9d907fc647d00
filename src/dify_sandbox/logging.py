"""Logging, configured once per process: structlog for our events, the same renderer for stdlib/uvicorn.

logfmt text for people by default, JSON lines with ``SANDBOX_LOG_FORMAT=json``. ``merge_contextvars``
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


def _text_renderer() -> Processor:
    """logfmt fields (what log tools parse), then any traceback on the lines below it, as people read one.

    Chosen over structlog's ``ConsoleRenderer`` (a development renderer) because every run logs a
    line: its column padding cost about three times as much per line.
    """
    fields = structlog.processors.LogfmtRenderer(key_order=["timestamp", "level", "event", "logger"], drop_missing=True)

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
    """Routes structlog and stdlib logging (uvicorn included) through one formatter to stderr (and a file)."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _add_pid,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = structlog.processors.JSONRenderer() if log_format == "json" else _text_renderer()
    shared.append(structlog.processors.format_exc_info)
    structlog.configure(
        # A line below the level is dropped before any processor spends time on it.
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
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
