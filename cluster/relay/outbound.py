"""A connection's outbound bytes: the ordered outbox, its byte count, and the one writer loop
that frames it onto the socket, with the drain deadline.

Split from cluster/relay/connection.py, which decides what may be queued (the byte budget, live
events held during a REQ); this module only moves queued bytes out and notices when the client
stops taking them: data waiting (in the outbox or the transport's buffer) and nothing written
out for `drain_timeout` seconds raises `Stalled`, whatever the client keeps sending us.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

from aiohttp import WSMsgType

from cluster.relay.deflate import ThresholdDeflateResponse
from cluster.relay.frames import text_frames

TRANSPORT_BACKED_UP = 64 * 1024
WRITE_BATCH_BYTES = 64 * 1024
WRITABLE_POLL = 0.005
WRITABLE_POLL_MAX = 0.1  # a stalled socket is polled ever more rarely: thousands stay cheap


class Stalled(Exception):
    """Nothing was written out to the client within the drain timeout."""


class Outbound:
    def __init__(
        self,
        ws: ThresholdDeflateResponse,
        transport: asyncio.Transport | None,
        *,
        budget: int,
        drain_timeout: float,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.budget = budget
        self.drain_timeout = drain_timeout
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.closed = False
        self._progress_at = time.monotonic()  # last time bytes left for the client
        self._last_buffer_size = 0
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def append(self, data: bytes) -> None:
        if not self.queue and not self.transport_pending():
            self._progress_at = time.monotonic()  # the drain deadline starts with the data
        self.queue.append(data)
        self.queued_bytes += len(data)
        self._wakeup.set()

    def clear(self) -> None:
        """Drop everything queued (the connection is closing) and release any waiter."""
        self.closed = True
        self.queue.clear()
        self.queued_bytes = 0
        self._room.set()

    async def wait_for_room(self) -> None:
        """Wait until the outbox is below the budget (or closed)."""
        while not self.closed and self.queued_bytes >= self.budget:
            self._room.clear()
            await self._room.wait()

    def transport_pending(self) -> bool:
        transport = self.transport
        return transport is not None and transport.get_write_buffer_size() > 0

    def backed_up(self) -> bool:
        """The kernel and transport buffers are full: the client is not keeping up."""
        transport = self.transport
        return transport is None or transport.get_write_buffer_size() >= TRANSPORT_BACKED_UP

    async def write_loop(self) -> None:
        """The only place that writes data frames to the socket.

        Everything queued that goes out uncompressed is framed here and written with one
        transport write; a message that will be compressed goes through aiohttp's writer (its
        compression context must see every compressed message, in order). Raises `Stalled`
        when the socket takes nothing for `drain_timeout` while data waits, ConnectionError or
        RuntimeError when the socket is gone.
        """
        ws = self.ws
        transport = self.transport
        while True:
            await self._idle(transport)
            while self.queue:
                if transport is None or ws.compresses(len(self.queue[0])):
                    data = self.queue.popleft()
                    async with asyncio.timeout(self._deadline_left()):
                        await ws.send_frame(data, WSMsgType.TEXT)
                    self._progress_at = time.monotonic()
                    self._sent(len(data))
                else:
                    self._write_plain(transport)
                    await self._writable(transport)
            self._room.set()

    async def _idle(self, transport: asyncio.Transport | None) -> None:
        """Wait for data to send; meanwhile bytes left in the transport must still drain."""
        poll = WRITABLE_POLL
        while not self._wakeup.is_set():
            if transport is None or transport.get_write_buffer_size() == 0:
                await self._wakeup.wait()
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll):
                    await self._wakeup.wait()
            poll = self._check_progress(transport, poll)
        self._wakeup.clear()

    def _write_plain(self, transport: asyncio.Transport) -> None:
        """Frame the queued messages up to the first one that will be compressed (or
        WRITE_BATCH_BYTES), and write them at once."""
        if self.ws.closed or transport.is_closing():
            raise ConnectionResetError("the WebSocket is closing")
        queue = self.queue
        ws = self.ws
        batch: list[bytes] = []
        size = 0
        while queue and size < WRITE_BATCH_BYTES and not ws.compresses(len(queue[0])):
            data = queue.popleft()
            batch.append(data)
            size += len(data)
        frames = text_frames(batch)
        before = transport.get_write_buffer_size()
        transport.write(frames)
        if transport.get_write_buffer_size() - before < len(frames):
            self._progress_at = time.monotonic()  # the kernel took some of it at once
        self._sent(size)

    def _sent(self, size: int) -> None:
        self.queued_bytes -= size
        if self.queued_bytes < self.budget:
            self._room.set()

    async def _writable(self, transport: asyncio.Transport) -> None:
        """Wait while the kernel and transport buffers are full: a slow reader is not fed
        faster than it reads (and `backed_up` tells the connection so)."""
        poll = WRITABLE_POLL
        while transport.get_write_buffer_size() >= TRANSPORT_BACKED_UP:
            if transport.is_closing():
                raise ConnectionResetError("the WebSocket is closing")
            await asyncio.sleep(poll)
            poll = self._check_progress(transport, poll)

    def _check_progress(self, transport: asyncio.Transport, poll: float) -> float:
        """Note progress if the transport's buffer shrank; raise `Stalled` past the deadline.
        Returns the next poll interval: short after progress, growing while nothing moves."""
        size = transport.get_write_buffer_size()
        now = time.monotonic()
        if size < self._last_buffer_size:
            self._progress_at = now
            poll = WRITABLE_POLL
        else:
            poll = min(poll * 2, WRITABLE_POLL_MAX)
        self._last_buffer_size = size
        if size > 0 and now - self._progress_at > self.drain_timeout:
            raise Stalled
        return poll

    def _deadline_left(self) -> float:
        return max(self._progress_at + self.drain_timeout - time.monotonic(), 0.0)

    async def flush(self, timeout: float) -> None:
        """Wait (bounded) until everything queued has been written."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.queue and not self.closed and loop.time() < deadline:
            await asyncio.sleep(0.01)
