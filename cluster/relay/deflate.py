"""permessage-deflate with a size threshold.

aiohttp compresses every message once the extension is negotiated; for the small messages that
dominate Nostr traffic (OK, EOSE, short events) that costs CPU and saves little. RFC 7692
(section 6) lets a sender leave any single message uncompressed (RSV1 unset) even when the
extension is in use, and doing so does not touch the compression context, so messages below the
threshold are written plainly and larger ones compressed (aiohttp uses zlib level 1).
"""

from __future__ import annotations

from aiohttp import WSMsgType, web
from aiohttp._websocket.writer import WebSocketWriter


class ThresholdDeflateResponse(web.WebSocketResponse):
    """A WebSocketResponse that compresses only messages of at least `threshold` bytes.

    Relies on one aiohttp detail, the writer's `compress` attribute (checked at start-up by
    `supports_threshold`); the relay's single writer task per connection is the only sender
    of data frames, so flipping it around one send cannot race another data frame.
    """

    def __init__(self, *, threshold: int, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._threshold = threshold

    def compresses(self, size: int) -> bool:
        """True when a message of `size` bytes goes out compressed (negotiated, and big enough)."""
        writer = getattr(self, "_writer", None)
        return writer is not None and bool(writer.compress) and size >= self._threshold

    async def send_frame(
        self, message: bytes, opcode: WSMsgType, compress: int | None = None
    ) -> None:
        writer = getattr(self, "_writer", None)
        if writer is None or not writer.compress or len(message) >= self._threshold:
            await super().send_frame(message, opcode, compress)
            return
        negotiated = writer.compress
        writer.compress = 0
        try:
            await super().send_frame(message, opcode)
        finally:
            writer.compress = negotiated


def supports_threshold() -> bool:
    """True when aiohttp's writer still exposes the attribute the threshold relies on."""
    return "compress" in WebSocketWriter.__init__.__code__.co_varnames
