"""Non-blocking pipe I/O on the event loop: capture a run's output, feed it its code.

Readers and writers hang on ``loop.add_reader``/``add_writer`` callbacks, so a run costs no task
or thread of its own, and stdout and stderr drain concurrently (no deadlock at 64 KiB).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

__all__ = ["PipeReader", "PipeWriter"]

_CHUNK = 1 << 16


class PipeReader:
    """Reads one pipe until EOF into memory, keeping at most ``limit`` bytes."""

    __slots__ = ("_chunks", "_loop", "_on_done", "_on_limit", "closed", "eof", "fd", "limit", "limited", "size")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        limit: int,
        on_limit: Callable[[], None],
        on_done: Callable[[], None],
    ) -> None:
        self._loop = loop
        self.fd = fd
        self.limit = limit
        self._on_limit = on_limit
        self._on_done = on_done
        self._chunks: list[bytes] = []
        self.size = 0
        self.eof = False
        self.limited = False
        self.closed = False
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, _CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.eof = True
            self.close()
            self._on_done()
            return
        room = self.limit - self.size
        if len(data) <= room:
            self._chunks.append(data)
            self.size += len(data)
            return
        self._chunks.append(data[:room])
        self.size = self.limit
        self.limited = True
        # Stop reading: the writer is about to be killed and nothing past the cap is kept.
        self.eof = True
        self.close()
        self._on_limit()
        self._on_done()

    def data(self) -> bytes:
        """Everything read."""
        return b"".join(self._chunks)

    def text(self) -> str:
        """Everything read, decoded as UTF-8 (invalid bytes become U+FFFD)."""
        return self.data().decode("utf-8", "replace")

    def close(self) -> None:
        """Stops reading and closes the fd; safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self.fd)
        os.close(self.fd)


class PipeWriter:
    """Writes ``data`` into a pipe as fast as the reader takes it, then closes the pipe (EOF)."""

    __slots__ = ("_loop", "_view", "closed", "fd")

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, data: bytes) -> None:
        self._loop = loop
        self.fd = fd
        self._view = memoryview(data)
        self.closed = False
        os.set_blocking(fd, False)
        if self._write() and not self.closed:
            loop.add_writer(fd, self._on_writable)

    def _write(self) -> bool:
        """Writes what fits; returns True while bytes remain."""
        try:
            while self._view:
                written = os.write(self.fd, self._view)
                self._view = self._view[written:]
        except BlockingIOError:
            return True
        except OSError:
            pass  # the reader is gone (the run died early); its exit status tells the story
        self._view = memoryview(b"")
        self.close()
        return False

    def _on_writable(self) -> None:
        if not self._write():
            self._loop.remove_writer(self.fd)

    def close(self) -> None:
        """Stops writing and closes the fd; safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self._loop.remove_writer(self.fd)
        with contextlib.suppress(OSError):
            os.close(self.fd)
