"""Frames exchanged between a server worker and its zygote over an ``AF_UNIX`` ``SOCK_SEQPACKET`` pair.

Every frame is one fixed-size datagram (``SEQPACKET`` keeps the boundaries), big-endian::

    0      1      4                12                       20               24
    +------+------+----------------+------------------------+----------------+
    |  op  | pad  |  run id (u64)  |  value (i64)           |  aux (i32)     |
    +------+------+----------------+------------------------+----------------+

    op  direction        value              aux                 ancillary data
    S   worker→zygote    flags | uid        preload length      SCM_RIGHTS [code_r, stdout_w, stderr_w, status_w]
    K   worker→zygote    -                  -                   -            kill the run's group
    P   worker→zygote    nonce              -                   -            ping
    R   zygote→worker    zygote pid         modules preloaded   -            ready (sent once; run id = isolation bits)
    x   zygote→worker    child pid          wait status         -            exited (group killed, dir removed)
    f   zygote→worker    -                  errno               -            fork failed
    p   zygote→worker    nonce              -                   -            pong

A spawn's value holds the run's flags in its low 16 bits and, above them, the run's own uid plus
one (0: the run has no uid of its own; see ``run_uids.py``).

The code travels on its own pipe (never argv), written by the worker while the child reads it,
so the zygote never copies it and a several-MB snippet costs the zygote nothing. The child
writes its pid (``STATUS``, 4 bytes) on the status pipe as it starts, and its exit code and the
code of a resource limit it hit (4 + 4 more) before it ends, so the worker can answer without
waiting for the kernel to tear the child down and the zygote to reap it; the ``x`` frame remains
the authority when no exit code arrives (killed, ``os._exit``, crash).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from dify_sandbox.errors import ProtocolError

__all__ = [
    "FLAG_NETWORK",
    "FRAME_BYTES",
    "READY_EVENT",
    "SPAWN_FDS",
    "STATUS",
    "Frame",
    "Op",
    "spawn_uid",
    "spawn_value",
]

# The zygote's last log line of its start-up (its log lines are JSON on stderr, apart from frames).
READY_EVENT: Final = "Zygote ready"

_FRAME: Final = struct.Struct("!c3xQqi")
FRAME_BYTES: Final = _FRAME.size
SPAWN_FDS: Final = 4  # code read end, stdout write end, stderr write end, status write end
STATUS: Final = struct.Struct("!i")
FLAG_NETWORK: Final = 1
_FLAG_BITS: Final = 16


def spawn_value(flags: int, uid: int | None) -> int:
    """A spawn frame's value: the run's flags and its own uid (None: the service's)."""
    return flags | (0 if uid is None else uid + 1) << _FLAG_BITS


def spawn_uid(value: int) -> tuple[int, int | None]:
    """Inverse of :func:`spawn_value`: (flags, uid or None)."""
    uid = (value >> _FLAG_BITS) - 1
    return value & ((1 << _FLAG_BITS) - 1), None if uid < 0 else uid


class Op:
    """Frame operation bytes."""

    SPAWN: Final = b"S"
    KILL: Final = b"K"
    PING: Final = b"P"
    READY: Final = b"R"
    EXITED: Final = b"x"
    FAILED: Final = b"f"
    PONG: Final = b"p"


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame."""

    op: bytes
    run_id: int = 0
    value: int = 0
    aux: int = 0

    def pack(self) -> bytes:
        """Encodes the frame for one ``send``."""
        return _FRAME.pack(self.op, self.run_id, self.value, self.aux)

    @classmethod
    def unpack(cls, data: bytes) -> Frame:
        """Decodes one datagram; raises :class:`ProtocolError` on a wrong size."""
        if len(data) != FRAME_BYTES:
            raise ProtocolError(f"frame of {len(data)} bytes, expected {FRAME_BYTES}")
        op, run_id, value, aux = _FRAME.unpack(data)
        return cls(op, run_id, value, aux)
