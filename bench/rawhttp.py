"""A minimal HTTP/1.1 client on raw sockets, for the scenarios whose figures the client itself would swamp.

httpx spends about 0.4 ms of CPU per request on the reference machine (0.54 ms per sequential request against a
constant-reply server where a raw socket takes 0.12 ms), and its async pool bookkeeping grows with the number of
connections, so a half-millisecond latency target, or 500 concurrent requests in 3 s, would mostly measure httpx.
This client does only what the scenarios need: send one pre-built request, read a status line, the headers and a
``Content-Length`` body. Anything else (chunked bodies, a closed connection) raises ``HttpError``.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, BinaryIO, Self

MAX_HEAD_BYTES = 64 * 1024


class HttpError(Exception):
    """The server closed the connection early or answered something this client does not parse."""


@dataclass(frozen=True, slots=True)
class RawResponse:
    """Status, body, and whether the server asked to close the connection."""

    status: int
    body: bytes
    close: bool = False

    def json(self) -> Any:
        return json.loads(self.body)


def build_request(
    method: str, host: str, port: int, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
) -> bytes:
    """The bytes of one HTTP/1.1 request (keep-alive), ready to be written as they are, any number of times."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method not in ("GET", "HEAD"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_head(head: bytes) -> tuple[int, int, bool]:
    """Status, Content-Length and connection-close of a response head (status line and headers, CRLF-separated)."""
    status_line, *header_lines = head.rstrip(b"\r\n").split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise HttpError(f"bad status line {status_line!r}")
    length: int | None = None
    close = parts[0] == b"HTTP/1.0"
    for line in header_lines:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            raise HttpError(f"unsupported Transfer-Encoding {value!r}")
        elif name == b"connection":
            close = value == b"close"
    if length is None:
        raise HttpError("response without Content-Length")
    return int(parts[1]), length, close


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    """Read one response from an asyncio stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        status, length, close = parse_head(head)
        return RawResponse(status, await reader.readexactly(length), close)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise HttpError(f"connection closed or head too large: {exc!r}") from exc


class BlockingConnection:
    """One keep-alive connection used sequentially; it reconnects when the server closed it after a response."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._sock: socket.socket | None = None
        self._file: BinaryIO | None = None

    def _connect(self) -> BinaryIO:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock, self._file = sock, sock.makefile("rb")
        return self._file

    def request(self, raw: bytes) -> RawResponse:
        """Send ``raw`` (from ``build_request``) and read the whole response."""
        file = self._file or self._connect()
        assert self._sock is not None
        self._sock.sendall(raw)
        head = bytearray()
        while not head.endswith(b"\r\n\r\n"):
            line = file.readline(MAX_HEAD_BYTES)
            if not line or len(head) > MAX_HEAD_BYTES:
                self.close()
                raise HttpError("connection closed before a full response head")
            head += line
        status, length, close = parse_head(bytes(head))
        body = file.read(length)
        if len(body) != length or close:
            self.close()
            if len(body) != length:
                raise HttpError(f"body cut at {len(body)} of {length} bytes")
        return RawResponse(status, body, close)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._sock is not None:
            self._sock.close()
        self._sock = self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
