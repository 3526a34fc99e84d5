"""Attack shapes for the abuse suite: each one a client that stays inside the limits it is given.

Every attacker runs from its own loopback source address (127.0.1.x), until `stop` is set, and
counts what happened to it in an `AttackStats`: how many connections it opened, how the relay
answered, how often the relay closed it (1008 is the relay defending itself). Loopback only
(require_loopback), bounded by the stop event and by each shape's own caps.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
import orjson

from cluster.nostr.signing import Signer
from loadtest.loopback import require_loopback

CONNECT_TIMEOUT = 10.0
TINY_RCVBUF = 4096


class AttackStats(msgspec.Struct):
    shape: str
    source: str
    connections: int = 0
    messages_sent: int = 0
    answers: dict[str, int] = {}
    closed_by_relay: dict[str, int] = {}
    refused_connections: int = 0

    def answered(self, message: list[object]) -> None:
        kind = str(message[0])
        if kind in ("OK", "CLOSED") and len(message) > 2:
            text = str(message[-1])
            kind = f"{kind} {text.split(':', 1)[0] if ':' in text else 'ok'}"
        self.answers[kind] = self.answers.get(kind, 0) + 1

    def closed(self, code: int | None) -> None:
        key = str(code)
        self.closed_by_relay[key] = self.closed_by_relay.get(key, 0) + 1


Attack = Callable[[str, str, asyncio.Event, AttackStats], Coroutine[Any, Any, None]]


def _session(source: str) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, local_addr=(source, 0))
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT)
    )


async def _read_until_stopped(
    ws: aiohttp.ClientWebSocketResponse, stop: asyncio.Event, stats: AttackStats
) -> None:
    """Drain the socket (a well-behaved reader) until stop or the relay closes it."""
    while not stop.is_set():
        try:
            message = await ws.receive(timeout=0.5)
        except TimeoutError:
            continue
        if message.type == aiohttp.WSMsgType.TEXT:
            stats.answered(orjson.loads(message.data))
        elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            stats.closed(ws.close_code)
            return
        elif message.type == aiohttp.WSMsgType.ERROR:
            return


async def _with_socket(
    url: str,
    source: str,
    stop: asyncio.Event,
    stats: AttackStats,
    body: Callable[[aiohttp.ClientWebSocketResponse], Awaitable[None]],
) -> None:
    """Connect (again after each close) and run `body` until stop."""
    async with _session(source) as session:
        while not stop.is_set():
            try:
                async with session.ws_connect(url, autoping=True, max_msg_size=64 << 20) as ws:
                    stats.connections += 1
                    await body(ws)
                    if ws.closed and ws.close_code is not None and not stop.is_set():
                        stats.closed(ws.close_code)
            except (aiohttp.ClientError, OSError, TimeoutError):
                stats.refused_connections += 1
                await asyncio.sleep(0.5)


# ---- the shapes --------------------------------------------------------------------------------


async def non_reading_req(url: str, source: str, stop: asyncio.Event, stats: AttackStats) -> None:
    """One REQ for as many stored events as allowed, then never read (pings keep it alive).

    A raw socket with a tiny receive buffer: aiohttp would read (and buffer) for us.
    """
    require_loopback(url)
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    while not stop.is_set():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, TINY_RCVBUF)
        sock.bind((source, 0))
        sock.setblocking(False)
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_connect(sock, (host, port)), CONNECT_TIMEOUT
            )
            reader, writer = await asyncio.open_connection(sock=sock)
        except (OSError, TimeoutError):
            sock.close()
            stats.refused_connections += 1
            await asyncio.sleep(0.5)
            continue
        stats.connections += 1
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CONNECT_TIMEOUT)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            continue
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            stats.refused_connections += 1
            writer.close()
            await asyncio.sleep(1.0)
            continue
        filters = [{"kinds": [1], "limit": 5000}, {"limit": 5000}]
        writer.write(_frame(0x1, orjson.dumps(["REQ", "hog", *filters])))
        stats.messages_sent += 1
        while not stop.is_set() and not reader.at_eof():
            writer.write(_frame(0x9, b"still here"))  # bytes in, never a byte read
            with contextlib.suppress(OSError):
                await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
            if writer.is_closing():
                break
        if not stop.is_set():
            stats.closed(1008)  # the relay ended it (it never learns our close code otherwise)
        writer.close()
        return


def _frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 5.3)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


async def count_flood(url: str, source: str, stop: asyncio.Event, stats: AttackStats) -> None:
    """COUNT over everything, as fast as the answers come."""

    async def body(ws: aiohttp.ClientWebSocketResponse) -> None:
        n = 0
        while not stop.is_set() and not ws.closed:
            n += 1
            await ws.send_str(orjson.dumps(["COUNT", f"c{n}", {}]).decode())
            stats.messages_sent += 1
            message = await ws.receive()
            if message.type != aiohttp.WSMsgType.TEXT:
                return
            stats.answered(orjson.loads(message.data))

    await _with_socket(url, source, stop, stats, body)


async def broad_subscriptions(
    url: str, source: str, stop: asyncio.Event, stats: AttackStats
) -> None:
    """As many broad subscriptions as a connection may hold; reads what they are sent."""

    async def body(ws: aiohttp.ClientWebSocketResponse) -> None:
        for n in range(200):
            flt = {"until": 1} if n % 2 else {"kinds": [1, 7, 6], "limit": 0}
            await ws.send_str(orjson.dumps(["REQ", f"b{n}", flt]).decode())
            stats.messages_sent += 1
        await _read_until_stopped(ws, stop, stats)

    await _with_socket(url, source, stop, stats, body)


async def invalid_flood(url: str, source: str, stop: asyncio.Event, stats: AttackStats) -> None:
    """Well-formed events with signatures that do not verify, reconnecting when closed."""
    signer = Signer()

    async def body(ws: aiohttp.ClientWebSocketResponse) -> None:
        n = 0
        while not stop.is_set() and not ws.closed:
            n += 1
            event = msgspec.to_builtins(signer.sign(1, f"forged {n}"))
            event["sig"] = "0" * 128
            await ws.send_str(orjson.dumps(["EVENT", event]).decode())
            stats.messages_sent += 1
            message = await ws.receive()
            if message.type != aiohttp.WSMsgType.TEXT:
                return
            stats.answered(orjson.loads(message.data))

    await _with_socket(url, source, stop, stats, body)


async def huge_filters(url: str, source: str, stop: asyncio.Event, stats: AttackStats) -> None:
    """REQs with as many filters and values as a message may carry, then CLOSE."""
    authors = [os.urandom(32).hex() for _ in range(100)]

    async def body(ws: aiohttp.ClientWebSocketResponse) -> None:
        n = 0
        while not stop.is_set() and not ws.closed:
            n += 1
            filters = [{"authors": authors, "#p": authors, "limit": 500} for _ in range(10)]
            await ws.send_str(orjson.dumps(["REQ", f"h{n}", *filters]).decode())
            stats.messages_sent += 1
            while not ws.closed:
                message = await ws.receive()
                if message.type != aiohttp.WSMsgType.TEXT:
                    return
                decoded = orjson.loads(message.data)
                if decoded[0] in ("EOSE", "CLOSED", "NOTICE"):
                    stats.answered(decoded)
                    break
            await ws.send_str(orjson.dumps(["CLOSE", f"h{n}"]).decode())

    await _with_socket(url, source, stop, stats, body)


async def req_close_churn(url: str, source: str, stop: asyncio.Event, stats: AttackStats) -> None:
    """Open and close subscriptions without end."""

    async def body(ws: aiohttp.ClientWebSocketResponse) -> None:
        n = 0
        while not stop.is_set() and not ws.closed:
            n += 1
            await ws.send_str(orjson.dumps(["REQ", "churn", {"kinds": [1], "limit": 1}]).decode())
            await ws.send_str(orjson.dumps(["CLOSE", "churn"]).decode())
            stats.messages_sent += 2
            with contextlib.suppress(TimeoutError):
                message = await ws.receive(timeout=1.0)
                if message.type != aiohttp.WSMsgType.TEXT:
                    return
                stats.answered(orjson.loads(message.data))

    await _with_socket(url, source, stop, stats, body)


async def reconnect_storm(url: str, source: str, stop: asyncio.Event, stats: AttackStats) -> None:
    """Connect and disconnect as fast as the relay lets it."""
    async with _session(source) as session:
        while not stop.is_set():
            try:
                async with session.ws_connect(url) as ws:
                    stats.connections += 1
                    await ws.close()
            except (aiohttp.ClientError, OSError, TimeoutError):
                stats.refused_connections += 1
                await asyncio.sleep(0.1)


async def slowloris(url: str, source: str, stop: asyncio.Event, stats: AttackStats) -> None:
    """Handshakes that never finish: a header line every second, up to 50 sockets."""
    require_loopback(url)
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    writers: list[asyncio.StreamWriter] = []
    try:
        while not stop.is_set():
            while len(writers) < 50 and not stop.is_set():
                try:
                    _, writer = await asyncio.wait_for(
                        asyncio.open_connection(host, port, local_addr=(source, 0)), 5.0
                    )
                except (OSError, TimeoutError):
                    stats.refused_connections += 1
                    break
                writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n".encode())
                writers.append(writer)
                stats.connections += 1
            for writer in list(writers):
                if writer.is_closing():
                    writers.remove(writer)
                    stats.closed(None)
                    continue
                writer.write(b"X-Slow: 1\r\n")
                stats.messages_sent += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        for writer in writers:
            writer.close()


SHAPES: dict[str, Attack] = {
    "non_reading_req": non_reading_req,
    "count_flood": count_flood,
    "broad_subscriptions": broad_subscriptions,
    "invalid_flood": invalid_flood,
    "huge_filters": huge_filters,
    "req_close_churn": req_close_churn,
    "reconnect_storm": reconnect_storm,
    "slowloris": slowloris,
}


def summarize(stats: list[AttackStats]) -> dict[str, Counter[str]]:
    """Per shape: the relay's answers and closes, added over the attackers."""
    found: dict[str, Counter[str]] = {}
    for one in stats:
        counter = found.setdefault(one.shape, Counter())
        counter.update(one.answers)
        counter.update({f"closed {code}": n for code, n in one.closed_by_relay.items()})
        counter["connections"] += one.connections
        counter["refused connections"] += one.refused_connections
    return found
