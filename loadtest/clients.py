"""The generator's sockets: aiohttp sessions per loopback source address, and their readers.

One reader task per connection feeds every text frame to a tracker's `handle`; nothing else
runs per message, so the generator stays far from saturating its core.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import Callable

import aiohttp

from loadtest.errors import LoadTestError
from loadtest.loopback import require_loopback, source_addresses

CONNECT_TIMEOUT = 15.0
MAX_CONNECTIONS = 60_000

Socket = aiohttp.ClientWebSocketResponse
Handler = Callable[[str], None]


class Clients:
    """aiohttp sessions, one per loopback source address, and the sockets they opened."""

    def __init__(self, url: str, sources: int = 1) -> None:
        """`url` may list several relays, comma-separated: connections alternate between them."""
        self.urls = [u.strip() for u in url.split(",") if u.strip()]
        for one in self.urls:
            require_loopback(one)
        self.ips = source_addresses(sources)
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._next = itertools.count()
        self.opened: list[Socket] = []

    def _session(self, ip: str) -> aiohttp.ClientSession:
        session = self._sessions.get(ip)
        if session is None:
            connector = aiohttp.TCPConnector(
                limit=0, local_addr=(ip, 0) if ip != "127.0.0.1" else None, ssl=False
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=CONNECT_TIMEOUT, sock_connect=CONNECT_TIMEOUT
                ),
            )
            self._sessions[ip] = session
        return session

    async def connect(self) -> Socket:
        serial = next(self._next)
        ip = self.ips[serial % len(self.ips)]
        url = self.urls[serial % len(self.urls)]
        async with asyncio.timeout(CONNECT_TIMEOUT):
            ws = await self._session(ip).ws_connect(
                url, autoping=True, heartbeat=None, max_msg_size=16 << 20, compress=0
            )
        self.opened.append(ws)
        return ws

    async def connect_many(
        self, count: int, concurrency: int = 200, timings: list[float] | None = None
    ) -> list[Socket | BaseException]:
        """`count` sockets (an exception object in place of each one that failed); each
        handshake's seconds are appended to `timings` when given."""
        if count > MAX_CONNECTIONS:
            raise LoadTestError(f"{count} connections exceeds the bound of {MAX_CONNECTIONS}")
        gate = asyncio.Semaphore(concurrency)

        async def one() -> Socket | BaseException:
            async with gate:
                started = time.perf_counter()
                try:
                    ws = await self.connect()
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    return exc
                if timings is not None:
                    timings.append(time.perf_counter() - started)
                return ws

        return list(await asyncio.gather(*(one() for _ in range(count))))

    async def connect_all(self, count: int, what: str) -> list[Socket]:
        """`count` sockets, or LoadTestError naming the first failure."""
        opened = await self.connect_many(count)
        failed = [s for s in opened if isinstance(s, BaseException)]
        if failed:
            raise LoadTestError(f"{len(failed)} of {count} {what} failed: {failed[0]!r}")
        return [s for s in opened if not isinstance(s, BaseException)]

    async def close(self) -> None:
        async def close_ws(ws: Socket) -> None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(3):
                    await ws.close()

        for start in range(0, len(self.opened), 2000):
            await asyncio.gather(*(close_ws(ws) for ws in self.opened[start : start + 2000]))
        self.opened.clear()
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()


async def wait_drained(drained: asyncio.Event, deadline: float) -> None:
    """Wait for the last answers, but never past `deadline` (perf_counter seconds)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.1, deadline - time.perf_counter())):
            await drained.wait()


async def pump(ws: Socket, handle: Handler) -> str:
    """Feed every text frame to `handle` until the socket closes; returns why it ended."""
    try:
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                handle(msg.data)
            elif msg.type is aiohttp.WSMsgType.ERROR:
                return "error"
    except (aiohttp.ClientError, ConnectionError) as exc:
        return type(exc).__name__
    return "closed"


class Readers:
    """Reader tasks; a socket that closes while the scenario still runs counts as an error."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[str]] = []
        self.closed_early: Counter[str] = Counter()
        self.stopping = False

    def start(self, ws: Socket, handle: Handler) -> None:
        async def run() -> str:
            reason = await pump(ws, handle)
            if not self.stopping:
                code = ws.close_code
                self.closed_early[f"disconnected ({reason}, code {code})"] += 1
            return reason

        self.tasks.append(asyncio.create_task(run()))

    async def stop(self) -> None:
        self.stopping = True
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
