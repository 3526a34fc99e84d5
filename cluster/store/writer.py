"""Group commit: one writer task per worker commits whatever EVENTs queued up, together.

Under load many events share one transaction (one fsync), so throughput is not capped by
per-event commits; at low load a batch is one event and latency is one commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg
from psycopg_pool import PoolTimeout

from cluster.store.events import EventStore, SaveOutcome, SaveRequest

log = logging.getLogger(__name__)

_Item = tuple[SaveRequest, "asyncio.Future[SaveOutcome]"]


class StoreUnavailable(RuntimeError):
    """The database could not commit the event; the client is told `error:` and may retry."""


def _is_connection_failure(exc: BaseException) -> bool:
    """Connection-level failures (server gone, pool exhausted) fail the same way one by one."""
    if isinstance(exc, (PoolTimeout, OSError, TimeoutError)):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(exc, psycopg.OperationalError) and (
        sqlstate is None or sqlstate.startswith(("08", "57P"))
    )


class EventWriter:
    """`lanes` independent group-commit loops, each on its own pooled connection, so one batch
    can commit while the next one is being written. A caller's events always use the same lane
    (`lane_key`), which keeps one client's events committed in the order it sent them."""

    def __init__(self, store: EventStore, batch_max: int, lanes: int = 1) -> None:
        self._store = store
        self._batch_max = batch_max
        self._queues: list[asyncio.Queue[_Item]] = [asyncio.Queue() for _ in range(lanes)]
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(queue), name=f"event-writer-{lane}")
            for lane, queue in enumerate(self._queues)
        ]

    def submit(self, request: SaveRequest, lane_key: int = 0) -> asyncio.Future[SaveOutcome]:
        """Queue now (a lane's queue order is its commit order); resolves after COMMIT."""
        future: asyncio.Future[SaveOutcome] = asyncio.get_running_loop().create_future()
        self._queues[lane_key % len(self._queues)].put_nowait((request, future))
        return future

    async def save(self, request: SaveRequest, lane_key: int = 0) -> SaveOutcome:
        """Resolve once the event's transaction has committed (or raise StoreUnavailable)."""
        return await self.submit(request, lane_key)

    async def close(self) -> None:
        """Commit everything already queued, then stop (graceful shutdown)."""
        if not self._tasks:
            return
        for queue in self._queues:
            await queue.join()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, queue: asyncio.Queue[_Item]) -> None:
        while True:
            batch = [await queue.get()]
            while len(batch) < self._batch_max and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                await self._commit(batch)
            finally:
                for _ in batch:
                    queue.task_done()

    async def _commit(self, batch: list[_Item]) -> None:
        try:
            outcomes = await self._store.save_many([request for request, _ in batch])
        except Exception as exc:  # the writer must outlive any one batch, whatever failed
            if len(batch) > 1 and not _is_connection_failure(exc):
                # e.g. a deadlock between two workers' batches: retry one event per transaction.
                log.warning("batch of %d failed (%s); retrying one by one", len(batch), exc)
                for item in batch:
                    await self._commit([item])
                return
            log.error("could not store %d event(s): %s", len(batch), exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(StoreUnavailable(str(exc) or type(exc).__name__))
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)
