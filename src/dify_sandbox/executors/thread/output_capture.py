"""Process-wide stream and logging routing for in-process runs (the thread executor).

``sys.stdout``/``sys.stderr``/``sys.stdin`` are replaced once by proxies that look up the run of
the current thread in a context variable: inside a run they write to that run's capture, outside
one they pass through to the real stream. Their ``buffer`` (bytes written to ``sys.stdout.buffer``)
is routed the same way. Nothing is reassigned per run, so concurrent runs never see each other's
output. A routing log handler on the root logger does the same for ``logging``. What is written to
fds 1 and 2 themselves (``os.write``, C code, child processes) bypasses Python and cannot be told
apart by run: it reaches the server's own streams.
"""

from __future__ import annotations

import codecs
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

    __slots__ = ("closed", "limit", "limited", "stderr", "stdout")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.limited = False
        self.closed = False  # the run was stopped (shutdown): later writes are dropped
        self.stdout = _Buffer()
        self.stderr = _Buffer()

    def write(self, buffer: _Buffer, text: str) -> None:
        """Appends ``text``; past the cap keeps what fits and stops the run."""
        if self.closed:
            return
        room = self.limit - buffer.size
        if len(text) > room:
            buffer.append(text[: max(room, 0)])
            self.limited = True
            raise OutputLimitError
        buffer.append(text)

    def write_bytes(self, buffer: _Buffer, data: bytes) -> None:
        """Appends bytes written to a stream's ``buffer``, decoded as the fork executor decodes its pipes."""
        self.write(buffer, buffer.decode(data))


class _Buffer:
    __slots__ = ("decoder", "parts", "size")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        # For bytes written to ``buffer``: a UTF-8 sequence may be split across writes.
        self.decoder: codecs.IncrementalDecoder | None = None

    def append(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)

    def decode(self, data: bytes) -> str:
        if self.decoder is None:
            self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        return self.decoder.decode(data)

    def text(self) -> str:
        if self.decoder is not None:
            self.parts.append(self.decoder.decode(b"", final=True))  # an unfinished sequence, as U+FFFD
            self.decoder = None
        text = "".join(self.parts)
        if text.isascii():
            return text
        # What the fork executor's UTF-8 stream would have written: lone surrogates escaped.
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


current_capture: contextvars.ContextVar[Capture | None] = contextvars.ContextVar("current_capture", default=None)


class _RoutedStream:
    """What both writer stand-ins share: the real stream behind them and which capture stream they feed."""

    def __init__(self, real: TextIO, which: str) -> None:
        self._real = real
        self._which = which

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._real.fileno()


class _RoutedBinaryWriter(_RoutedStream, io.BufferedIOBase):
    """Stands in for ``sys.stdout.buffer`` / ``sys.stderr.buffer``: a run's bytes go to its capture."""

    def write(self, data: Any) -> int:
        raw = bytes(data)
        capture = current_capture.get()
        if capture is not None:
            capture.write_bytes(getattr(capture, self._which), raw)
            return len(raw)
        real_buffer = getattr(self._real, "buffer", None)
        if real_buffer is None:  # a text-only stream (a test runner's capture): write it as text
            self._real.write(raw.decode("utf-8", "replace"))
            return len(raw)
        self._real.flush()  # what was written as text before these bytes goes out first
        return int(real_buffer.write(raw))

    def flush(self) -> None:
        if current_capture.get() is None:
            real_buffer = getattr(self._real, "buffer", None)
            (real_buffer or self._real).flush()


class _RoutedWriter(_RoutedStream, io.TextIOBase):
    """Stands in for sys.stdout or sys.stderr for the whole process."""

    def __init__(self, real: TextIO, which: str) -> None:
        super().__init__(real, which)
        self._buffer = _RoutedBinaryWriter(real, which)

    @property
    def buffer(self) -> _RoutedBinaryWriter:
        """The binary layer, routed per run like the text one."""
        return self._buffer

    def write(self, text: str) -> int:
        capture = current_capture.get()
        if capture is None:
            return self._real.write(text)
        capture.write(getattr(capture, self._which), text)
        return len(text)

    def flush(self) -> None:
        if current_capture.get() is None:
            self._real.flush()

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
