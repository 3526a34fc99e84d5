"""permessage-deflate with a threshold, checked on the wire: RSV1 (compressed) is set on large
messages only. A raw socket is used because WebSocket clients hide the bit."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
import zlib

import msgspec
import orjson

from cluster.nostr.signing import Signer
from tests.client import connect
from tests.services import RelayProcess, RelayStarter


async def read_frame(reader: asyncio.StreamReader) -> tuple[bool, int, bytes]:
    """(rsv1, opcode, payload) of one unmasked server frame."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", await reader.readexactly(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", await reader.readexactly(8))[0]
    return bool(first & 0x40), first & 0x0F, await reader.readexactly(length)


def client_frame(text: str) -> bytes:
    payload, mask = text.encode(), os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    header = bytes([0x81])
    if len(payload) < 126:
        header += bytes([0x80 | len(payload)])
    else:
        header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    return header + mask + masked


async def test_only_messages_above_the_threshold_are_compressed(
    start_relay: RelayStarter,
) -> None:
    relay: RelayProcess = start_relay.start(
        workers=1, RELAY_NETWORK__COMPRESSION="true", RELAY_NETWORK__COMPRESSION_THRESHOLD="1024"
    )
    signer = Signer()
    # Newest first: small, large, small, small, large. Plain messages are written in batches
    # and compressed ones one by one; the order on the wire must still be the REQ's order.
    now = int(time.time())
    contents = ["tiny", "x" * 1900, "small", "short", "y" * 1500]
    events = [signer.sign(1, text, created_at=now - age) for age, text in enumerate(contents)]
    small, large = events[0], events[1]
    async with connect(relay.url) as publisher:
        for event in events:
            answer = await publisher.publish(event)
            assert answer[2] is True, answer

    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert b"101" in head.split(b"\r\n")[0] and b"permessage-deflate" in head.lower(), head
    ids = [event.id for event in events]
    writer.write(client_frame(orjson.dumps(["REQ", "z", {"ids": ids}]).decode()))
    await writer.drain()
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    seen: dict[str, bool] = {}
    for _ in range(len(events) + 1):
        rsv1, opcode, payload = await asyncio.wait_for(read_frame(reader), 10)
        assert opcode == 1
        if rsv1:
            payload = inflater.decompress(payload + b"\x00\x00\xff\xff")
        message = msgspec.json.decode(payload)
        seen[message[2]["id"] if message[0] == "EVENT" else message[0]] = rsv1
    writer.close()
    await writer.wait_closed()
    assert list(seen) == [*ids, "EOSE"]
    assert seen == {
        **{event.id: len(event.content) >= 1024 for event in events},
        "EOSE": False,
    }
    assert seen[large.id] and not seen[small.id]
