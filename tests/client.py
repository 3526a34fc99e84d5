"""A minimal Nostr client over aiohttp WebSockets, for end-to-end tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import msgspec
import orjson

from cluster.nostr.event import Event

RECEIVE_TIMEOUT = 10.0


class RelayClient:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, message: Any) -> None:
        if isinstance(message, (bytes, str)):
            await self.ws.send_str(message if isinstance(message, str) else message.decode())
        else:
            await self.ws.send_str(orjson.dumps(message).decode())

    async def receive(self, timeout: float = RECEIVE_TIMEOUT) -> list[Any]:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"expected a text frame, got {msg.type} {msg.data!r}")
        decoded: list[Any] = orjson.loads(msg.data)
        return decoded

    async def receive_until(
        self, predicate: Any, timeout: float = RECEIVE_TIMEOUT
    ) -> tuple[list[list[Any]], list[Any]]:
        """Messages received before the first one satisfying `predicate`, and that one."""
        before: list[list[Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            message = await self.receive(max(0.01, deadline - loop.time()))
            if predicate(message):
                return before, message
            before.append(message)

    async def publish(self, event: Event | dict[str, Any]) -> list[Any]:
        """Send EVENT and return its OK message (other messages are ignored)."""
        payload = msgspec.to_builtins(event) if isinstance(event, Event) else event
        await self.send(["EVENT", payload])
        event_id = payload.get("id")
        _, ok = await self.receive_until(lambda m: m[0] == "OK" and m[1] == event_id)
        return ok

    async def query(self, sub_id: str, *filters: dict[str, Any]) -> list[dict[str, Any]]:
        """REQ, collect stored events until EOSE, then CLOSE; fails on CLOSED."""
        await self.send(["REQ", sub_id, *filters])
        before, end = await self.receive_until(
            lambda m: m[0] in ("EOSE", "CLOSED") and m[1] == sub_id
        )
        assert end[0] == "EOSE", f"subscription refused: {end}"
        await self.send(["CLOSE", sub_id])
        return [m[2] for m in before if m[0] == "EVENT" and m[1] == sub_id]

    async def expect_silence(self, seconds: float) -> None:
        try:
            message = await self.ws.receive(timeout=seconds)
        except TimeoutError:
            return
        raise AssertionError(f"expected nothing, got {message.type} {message.data!r}")


@asynccontextmanager
async def connect(url: str, source: str | None = None, **kwargs: Any) -> AsyncIterator[RelayClient]:
    """A client connection; `source` picks its loopback address (127.0.1.x: another client)."""
    connector = None if source is None else aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.ws_connect(url, autoping=True, max_msg_size=8 << 20, **kwargs) as ws,
    ):
        yield RelayClient(ws)
