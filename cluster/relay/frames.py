"""Server-to-client WebSocket text frames (RFC 6455 section 5.2), built without I/O.

The writer task joins every queued message below the compression threshold into one buffer
and hands it to the transport in one write: a REQ answered with 50 stored events is then one
send, not 50 (and one read and one write in nginx, and one read in the client).
"""

from __future__ import annotations

import struct

FIN_TEXT = 0x81  # FIN bit + opcode 1 (text); server frames are never masked
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def frame_header(length: int) -> bytes:
    """The header of one unfragmented, unmasked text frame carrying `length` bytes."""
    if length < 126:
        return _SHORT.pack(FIN_TEXT, length)
    if length < 65536:
        return _MEDIUM.pack(FIN_TEXT, 126, length)
    return _LONG.pack(FIN_TEXT, 127, length)


def text_frames(messages: list[bytes]) -> bytes:
    """The frames for `messages`, in order, as one buffer."""
    parts: list[bytes] = []
    for message in messages:
        parts.append(frame_header(len(message)))
        parts.append(message)
    return b"".join(parts)
