"""Memory per connection is bounded in bytes (issue 13): a client that sends one REQ for many
stored events and then never reads (it only sends pings) is closed with 1008 within the drain
timeout, while the relay read only about one byte budget of rows for it; a reading client gets
every row and EOSE."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import struct
import time
from pathlib import Path

import msgspec
import pytest

from cluster.nostr.signing import Signer
from tests.client import connect
from tests.services import RelayProcess, RelayStarter

STORED = 3000
CONTENT = 6000  # bytes of content per stored event: 18 MB in all
ROW_CAP = 2500
BUDGET = 100_000
DRAIN_TIMEOUT = 2.0
CLOSING = re.compile(
    r"closing connection \d+ \(1008\): (?P<reason>[^;]+); "
    r"peak_queued_bytes=(?P<peak>\d+) rows_fetched=(?P<rows>\d+)"
)


@pytest.fixture
def draining_relay(start_relay: RelayStarter) -> RelayProcess:
    return start_relay.start(
        workers=1,
        RELAY_NETWORK__DRAIN_TIMEOUT=str(DRAIN_TIMEOUT),
        RELAY_LIMITS__MAX_OUTBOUND_BYTES=str(BUDGET),
        RELAY_LIMITS__MAX_LIMIT="5000",
        RELAY_LIMITS__MAX_CONTENT_LENGTH=str(CONTENT + 100),
        RELAY_LIMITS__MAX_ROWS_PER_REQ=str(ROW_CAP),
    )


def masked_text_frame(payload: bytes) -> bytes:
    """A client frame (RFC 6455 section 5.2: clients mask)."""
    mask = os.urandom(4)
    length = len(payload)
    header = (
        struct.pack("!BB", 0x81, 0x80 | length)
        if length < 126
        else (struct.pack("!BBH", 0x81, 0x80 | 126, length))
    )
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return header + mask + masked


async def raw_websocket(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket whose receive buffer is tiny and that reads nothing it is not asked to."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    key = base64.b64encode(os.urandom(16)).decode()
    handshake = (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: {key}\r\n\r\n"
    )
    writer.write(handshake.encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def close_code(reader: asyncio.StreamReader) -> int:
    """Read frames (bounded) until the close frame; its status code."""
    async with asyncio.timeout(20):
        while True:
            first, second = await reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await reader.readexactly(8))
            payload = await reader.readexactly(length)
            if first & 0x0F == 0x8:
                code: int = struct.unpack("!H", payload[:2])[0]
                return code


async def closing_line(log_path: Path, timeout: float) -> re.Match[str] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = CLOSING.search(await asyncio.to_thread(log_path.read_text, errors="replace"))
        if found:
            return found
        await asyncio.sleep(0.05)
    return None


async def store_events(url: str, signers: list[Signer]) -> None:
    body = "m" * CONTENT
    async with connect(url) as publisher:
        for start in range(0, STORED, 250):
            for i in range(start, start + 250):
                event = signers[i % 2].sign(1, f"{i} {body}")
                await publisher.send(["EVENT", msgspec.to_builtins(event)])
            for _ in range(250):
                answer = await publisher.receive()
                assert answer[0] == "OK" and answer[2] is True, answer


async def read_normally(url: str, authors: list[str]) -> None:
    """A client that reads gets all its rows and EOSE, up to the REQ's row cap."""
    async with connect(url) as healthy:
        some = await healthy.query("some", {"authors": authors, "limit": 1200})
        assert len({event["id"] for event in some}) == 1200
        # Two filters of 1,500 events each: the row cap holds across them, newest first.
        both = await healthy.query(
            "capped",
            {"authors": authors[:1], "limit": 2000},
            {"authors": authors[1:], "limit": 2000},
        )
        assert len({event["id"] for event in both}) == ROW_CAP
        newest = [event["created_at"] for event in both]
        assert newest == sorted(newest, reverse=True)


def kernel_send_buffer_max() -> int:
    return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])


async def test_a_req_that_is_never_read_is_closed_and_costs_about_one_budget(
    draining_relay: RelayProcess,
) -> None:
    # What may leave the relay for a client that reads nothing: the kernel's send buffer, the
    # transport's, and about one budget; beyond that the REQ must stop reading rows.
    most_rows = (kernel_send_buffer_max() + 65536 + 2 * BUDGET) // CONTENT + 1
    assert most_rows < STORED // 2, "store more (or larger) events for this test to mean much"
    signers = [Signer(), Signer()]
    authors = [signer.pubkey for signer in signers]
    await store_events(draining_relay.url, signers)

    reader, writer = await raw_websocket(draining_relay.port)
    request = msgspec.json.encode(["REQ", "all", {"authors": authors, "limit": 5000}])
    writer.write(masked_text_frame(request))
    sent_at = time.monotonic()
    healthy = asyncio.create_task(read_normally(draining_relay.url, authors))
    # Pings (client frames, masked) keep arriving: they must not keep the stalled socket open.
    found = None
    while found is None and time.monotonic() - sent_at < DRAIN_TIMEOUT + 3:
        writer.write(struct.pack("!BB", 0x89, 0x80) + os.urandom(4))
        found = await closing_line(draining_relay.log_path, 0.3)
    assert found is not None, draining_relay.log_tail()
    assert found["reason"].startswith("Not reading")
    # Bounded: the relay held about one budget for it and read only what could leave.
    assert int(found["peak"]) <= 2 * BUDGET, found.group(0)
    assert 0 < int(found["rows"]) <= most_rows, found.group(0)
    assert await close_code(reader) == 1008
    writer.close()
    await asyncio.wait_for(healthy, 60)
