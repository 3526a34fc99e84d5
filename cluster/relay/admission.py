"""Per-worker admission of store queries: a concurrency limit with fair queuing per address.

One address flooding REQs or COUNTs must not wait in front of everyone else. Every store query
takes one of `limit` slots; when none is free it waits in its address's queue, and a freed slot
goes to the next address in round-robin order (the address then moves to the back), so an
address's queries wait behind each other while every other address keeps its turn. Each address
may have at most `queue_per_address` queries waiting; past that the query is refused at once
(`QueriesWaiting`: the caller answers CLOSED `rate-limited:`), so waiting costs bounded memory.
Pure asyncio, no I/O: one instance per worker, used from one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator


class QueriesWaiting(Exception):
    """This address already has as many queries waiting as it may."""


class QueryAdmission:
    def __init__(self, limit: int, queue_per_address: int = 16) -> None:
        self.limit = limit
        self.queue_per_address = queue_per_address
        self._running = 0
        # Addresses with waiters, in round-robin order (dicts keep insertion order).
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}

    @property
    def running(self) -> int:
        return self._running

    def waiting(self, address: str | None = None) -> int:
        """Queries waiting for a slot: of one address, or of all."""
        if address is not None:
            return len(self._waiting.get(address, ()))
        return sum(len(queue) for queue in self._waiting.values())

    @contextlib.asynccontextmanager
    async def slot(self, address: str) -> AsyncIterator[None]:
        """Hold one query slot for the block; raises QueriesWaiting if the address's queue is
        full. A waiter cancelled before or just after being granted a slot leaves none taken."""
        await self._acquire(address)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, address: str) -> None:
        if self._running < self.limit and not self._waiting:
            self._running += 1
            return
        queue = self._waiting.get(address)
        if queue is None:
            queue = self._waiting[address] = deque()
        if len(queue) >= self.queue_per_address:
            raise QueriesWaiting(address)
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()  # granted, then cancelled before it could run: pass it on
            else:
                self._forget(address, granted)
            raise

    def _forget(self, address: str, granted: asyncio.Future[None]) -> None:
        queue = self._waiting.get(address)
        if queue is None:
            return
        with contextlib.suppress(ValueError):
            queue.remove(granted)
        if not queue:
            del self._waiting[address]

    def _release(self) -> None:
        self._running -= 1
        while self._running < self.limit and self._waiting:
            address = next(iter(self._waiting))
            queue = self._waiting.pop(address)
            granted = queue.popleft()
            if queue:
                self._waiting[address] = queue  # back of the round
            if not granted.done():
                self._running += 1
                granted.set_result(None)
