"""Zygote frames."""

from __future__ import annotations

import pytest

from dify_sandbox.errors import ProtocolError
from dify_sandbox.executors.zygote.protocol import FRAME_BYTES, Frame, Op


def test_frame_round_trip() -> None:
    """Every field survives pack/unpack, negative values included."""
    frame = Frame(Op.EXITED, run_id=2**40, value=-5, aux=-(2**31))
    data = frame.pack()
    assert len(data) == FRAME_BYTES
    assert Frame.unpack(data) == frame


@pytest.mark.parametrize("size", [0, FRAME_BYTES - 1, FRAME_BYTES + 1])
def test_wrong_size_is_a_protocol_error(size: int) -> None:
    """A datagram of the wrong size is rejected, not misread."""
    with pytest.raises(ProtocolError):
        Frame.unpack(b"x" * size)
