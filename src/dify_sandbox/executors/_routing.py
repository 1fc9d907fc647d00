"""Process-wide stream and logging routing for in-process runs (the thread executor).

``sys.stdout``/``sys.stderr``/``sys.stdin`` are replaced once by proxies that look up the run of
the current thread in a context variable: inside a run they write to that run's capture, outside
one they pass through to the real stream. Nothing is reassigned per run, so concurrent runs never
see each other's output. A routing log handler on the root logger does the same for ``logging``.
"""

from __future__ import annotations

import contextvars
import io
import logging
import sys
from typing import Any, TextIO

__all__ = ["Capture", "OutputLimitError", "current_capture", "route_logging", "route_streams"]


class OutputLimitError(BaseException):
    """Raised in the writing thread when a run's output passes the cap (a BaseException: not catchable by
    ``except Exception`` in the snippet)."""


class Capture:
    """One run's stdout and stderr, bounded by ``limit`` characters per stream."""

    __slots__ = ("limit", "limited", "stderr", "stdout")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.limited = False
        self.stdout = _Buffer()
        self.stderr = _Buffer()

    def write(self, buffer: _Buffer, text: str) -> None:
        """Appends ``text``; past the cap keeps what fits and stops the run."""
        room = self.limit - buffer.size
        if len(text) > room:
            buffer.append(text[: max(room, 0)])
            self.limited = True
            raise OutputLimitError
        buffer.append(text)


class _Buffer:
    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0

    def append(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)

    def text(self) -> str:
        text = "".join(self.parts)
        if text.isascii():
            return text
        # What the fork executor's UTF-8 stream would have written: lone surrogates escaped.
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


current_capture: contextvars.ContextVar[Capture | None] = contextvars.ContextVar("current_capture", default=None)


class _RoutedWriter(io.TextIOBase):
    """Stands in for sys.stdout or sys.stderr for the whole process."""

    def __init__(self, real: TextIO, which: str) -> None:
        self._real = real
        self._which = which

    def write(self, text: str) -> int:
        capture = current_capture.get()
        if capture is None:
            return self._real.write(text)
        capture.write(getattr(capture, self._which), text)
        return len(text)

    def flush(self) -> None:
        if current_capture.get() is None:
            self._real.flush()

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._real.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _RoutedReader(io.TextIOBase):
    """Stands in for sys.stdin: a run reads EOF, as from the fork executor's /dev/null."""

    def __init__(self, real: TextIO | None) -> None:
        self._real = real

    def read(self, size: int | None = -1) -> str:
        if current_capture.get() is not None or self._real is None:
            return ""
        return self._real.read(-1 if size is None else size)

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]  # typeshed: _IOBase is bytes
        if current_capture.get() is not None or self._real is None:
            return ""
        return self._real.readline(-1 if size is None else size)

    def readable(self) -> bool:
        return True


class _RoutingHandler(logging.Handler):
    """Sends records emitted inside a run to that run's stderr, in ``basicConfig``'s format."""

    def __init__(self, server_handlers: list[logging.Handler]) -> None:
        super().__init__()
        self.server_handlers = server_handlers
        self.run_formatter = logging.Formatter(logging.BASIC_FORMAT)

    def handle(self, record: logging.LogRecord) -> bool:
        capture = current_capture.get()
        if capture is None:
            for handler in self.server_handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)
            return True
        capture.write(capture.stderr, self.run_formatter.format(record) + "\n")
        return True

    def emit(self, record: logging.LogRecord) -> None:  # handle() does the work
        raise NotImplementedError


def route_streams() -> None:
    """Installs the stream proxies unless they are in place (one isinstance check when they are).

    Cheap enough to call before every run, which keeps routing right even if something (a test
    runner's capture, say) replaced ``sys.stdout`` after start-up.
    """
    if not isinstance(sys.stdout, _RoutedWriter):
        sys.stdout = _RoutedWriter(sys.stdout, "stdout")
    if not isinstance(sys.stderr, _RoutedWriter):
        sys.stderr = _RoutedWriter(sys.stderr, "stderr")
    if not isinstance(sys.stdin, _RoutedReader):
        sys.stdin = _RoutedReader(sys.stdin)


def route_logging() -> None:
    """Wraps the root logger's handlers in the routing handler (once)."""
    root = logging.getLogger()
    if not any(isinstance(handler, _RoutingHandler) for handler in root.handlers):
        root.handlers = [_RoutingHandler(list(root.handlers))]
