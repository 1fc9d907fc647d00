"""The log handler that writes a worker's lines: batched per event-loop iteration, never split inside a line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
from collections.abc import Iterator

import pytest

from dify_sandbox.logging import BatchedLineHandler


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    yield read_end, write_end
    os.close(read_end)
    os.close(write_end)


def reads(fd: int) -> list[bytes]:
    """What is in the pipe now."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            return chunks
        chunks.append(chunk)


def test_outside_an_event_loop_each_line_is_written_at_once(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    handler = BatchedLineHandler(write_end)
    handler.write_line("first")
    assert b"".join(reads(read_end)) == b"first\n"
    handler.write_line("second ü")
    assert b"".join(reads(read_end)) == "second ü\n".encode()


def test_lines_of_one_loop_iteration_go_out_together_after_it(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    handler = BatchedLineHandler(write_end)

    async def log_three() -> tuple[bytes, bytes]:
        for n in range(3):
            handler.write_line(f"line {n}")
        during = b"".join(reads(read_end))
        await asyncio.sleep(0)  # the queued flush runs
        return during, b"".join(reads(read_end))

    during, after = asyncio.run(log_three())
    assert during == b""
    assert after == b"line 0\nline 1\nline 2\n"


def test_a_batch_is_written_in_whole_lines_of_at_most_pipe_buf() -> None:
    """Seen through a datagram socket, where every ``write`` stays one message."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    handler = BatchedLineHandler(theirs.fileno())
    lines = [f"{n:04d} " + "x" * 1000 for n in range(10)]

    async def log_all() -> None:
        for line in lines:
            handler.write_line(line)
        await asyncio.sleep(0)

    try:
        asyncio.run(log_all())
        ours.setblocking(False)
        writes = []
        with contextlib.suppress(BlockingIOError):
            while True:
                writes.append(ours.recv(1 << 20))
    finally:
        ours.close()
        theirs.close()
    assert b"".join(writes) == "".join(f"{line}\n" for line in lines).encode()
    assert len(writes) == 3  # 4 lines of 1,006 bytes fit in 4,096
    assert all(len(write) <= select.PIPE_BUF and write.endswith(b"\n") for write in writes)


def test_a_forked_child_does_not_write_the_parents_queued_lines(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    handler = BatchedLineHandler(write_end)

    async def log_then_fork() -> None:
        handler.write_line("written once")
        pid = os.fork()
        if pid == 0:
            handler.flush()
            os._exit(0)
        os.waitpid(pid, 0)
        await asyncio.sleep(0)

    asyncio.run(log_then_fork())
    assert b"".join(reads(read_end)) == b"written once\n"
