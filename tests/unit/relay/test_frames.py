"""Text frames built by the relay's batched writer, parsed back per RFC 6455 section 5.2."""

from __future__ import annotations

import struct

import pytest

from cluster.relay.frames import frame_header, text_frames


def parse_frames(buffer: bytes) -> list[bytes]:
    """An independent reader for unmasked, unfragmented server frames."""
    messages, at = [], 0
    while at < len(buffer):
        first, second = buffer[at], buffer[at + 1]
        assert first == 0x81, "FIN + text opcode, no RSV bits"
        assert not second & 0x80, "server frames are not masked"
        length, at = second & 0x7F, at + 2
        if length == 126:
            (length,), at = struct.unpack_from("!H", buffer, at), at + 2
        elif length == 127:
            (length,), at = struct.unpack_from("!Q", buffer, at), at + 8
        messages.append(buffer[at : at + length])
        at += length
    return messages


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_header_uses_the_shortest_length_form(length: int, header: bytes) -> None:
    assert frame_header(length) == header


def test_batch_round_trips_in_order() -> None:
    messages = [b'["EOSE","a"]', b"", b"x" * 125, b"y" * 126, "é".encode() * 40_000, b"z"]
    assert parse_frames(text_frames(messages)) == messages
    assert text_frames([]) == b""
