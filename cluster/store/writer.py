"""The write path: a batch of events saved in ONE statement, and the group commit that feeds it.

Read top to bottom: `SaveRequest` (one event, its JSON, the claim to charge) -> `SaveRow` (one
event as the SQL function reads it, by name; the batch is one JSON array of them) ->
`PostgresBatchSaver` (one statement on an autocommit connection = one transaction) ->
`EventWriter` (lanes that commit whatever queued up together, and retry a failed batch one
event per transaction).

Under load many events share one transaction (one fsync), so throughput is not capped by
per-event commits; at low load a batch is one event and latency is one commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from enum import StrEnum
from typing import NamedTuple, Protocol

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from cluster import metrics
from cluster.nostr.deletion import deletion_targets
from cluster.nostr.event import Event
from cluster.nostr.kinds import DELETION
from cluster.store.charges import Charge
from cluster.store.text import pg_text

log = logging.getLogger(__name__)


class SaveOutcome(StrEnum):
    """What the database decided for one event (functions/050_save_event.sql)."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    SUPERSEDED = "superseded"
    DELETED = "deleted"
    VANISHED = "vanished"
    STALE_NONCE = "stale_nonce"
    INSUFFICIENT_BALANCE = "insufficient_balance"


class SaveRequest(msgspec.Struct, frozen=True):
    """One event to store: the event, its JSON exactly as it will be served, what to charge."""

    event: Event
    raw: str
    payment: Charge | None = None


class StoreUnavailable(RuntimeError):
    """The database could not commit the event; the client is told `error:` and may retry."""


# ---- one batch, one statement ------------------------------------------------------------------


class EventRow(NamedTuple):
    """An event as a row of the `events` table (the field names are its column names)."""

    id: bytes
    pubkey: bytes
    created_at: int
    kind: int
    address: str | None
    expires_at: int | None
    tagvalues: list[str]
    raw: str


EVENT_ROW_COLUMNS = ", ".join(EventRow._fields)
"""The column list for `COPY events (...)` of `event_row` rows (bulk loads, the bench)."""


def storable(event: Event) -> tuple[str | None, int | None, list[str]]:
    """(address, expires_at, tag values) as PostgreSQL stores them: text it can hold
    (`pg_text`). Shared by the batch save and the bulk COPY, so both store the same values."""
    address = event.address
    return (
        None if address is None else pg_text(address),
        event.expiration,
        [pg_text(value) for value in event.indexed_tags()],
    )


def event_row(event: Event, raw: str) -> EventRow:
    """The stored form of an event: ids as bytes, the rest as `storable` makes it."""
    address, expires_at, tagvalues = storable(event)
    return EventRow(
        bytes.fromhex(event.id),
        bytes.fromhex(event.pubkey),
        event.created_at,
        event.kind,
        address,
        expires_at,
        tagvalues,
        raw,
    )


class SaveRow(msgspec.Struct, frozen=True):
    """One event of a batch as relay_save_events reads it: the SQL composite type
    `relay_save_row` (migration 005) has these fields, by these names, in this order
    (tests/unit/store/test_save_rows.py checks it). The batch travels as one JSON array of
    these objects: one parameter, matched by name on the server, where 21 parallel binary
    arrays cost the relay more CPU to dump than the rest of the write path together."""

    id: str
    pubkey: str
    created_at: int
    kind: int
    address: str | None
    expires_at: int | None
    tagvalues: list[str]
    raw: str
    delete_ids: list[str]
    delete_addresses: list[str]
    # The charge (all None for an unpaid event): cluster/store/charges.py.
    channel: str | None = None
    nonce: int | None = None
    amount: int | None = None
    blockchain: str | None = None
    sender_pubkey: str | None = None
    capacity: int | None = None
    expiration: int | None = None
    status: str | None = None


def save_row(request: SaveRequest) -> SaveRow:
    """The one place a request becomes what the SQL function reads."""
    event = request.event
    address, expires_at, tagvalues = storable(event)
    delete_ids, delete_addresses = _deletion_targets(event)
    charge = request.payment
    row = SaveRow(
        id=event.id,
        pubkey=event.pubkey,
        created_at=event.created_at,
        kind=event.kind,
        address=address,
        expires_at=expires_at,
        tagvalues=tagvalues,
        raw=request.raw,
        delete_ids=delete_ids,
        delete_addresses=delete_addresses,
    )
    if charge is None:
        return row
    return msgspec.structs.replace(
        row,
        channel=charge.channel_id,
        nonce=charge.nonce,
        amount=charge.amount,
        blockchain=charge.currency,
        sender_pubkey=charge.sender_pubkey,
        capacity=charge.capacity,
        expiration=charge.expiration,
        status=charge.status,
    )


def save_batch(requests: Sequence[SaveRequest]) -> str:
    """The batch parameter: a JSON array of SaveRow objects."""
    return _batch_encoder.encode([save_row(request) for request in requests]).decode()


_batch_encoder = msgspec.json.Encoder()


def _deletion_targets(event: Event) -> tuple[list[str], list[str]]:
    """NIP-09 ids and addresses a kind-5 event deletes (text PostgreSQL can hold); else none."""
    if event.kind != DELETION:
        return [], []
    ids, addresses = deletion_targets(event)
    return ids, [pg_text(address) for address in addresses]


SAVE_BATCH_SQL = "SELECT relay_save_events(%s::json)"


class BatchSaver(Protocol):
    """What EventWriter commits with: a whole batch in one transaction, one outcome per event."""

    async def save_many(self, requests: Sequence[SaveRequest]) -> list[SaveOutcome]: ...


class PostgresBatchSaver:
    """`BatchSaver` over PostgreSQL: one statement per batch on an autocommit connection."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def save_many(self, requests: Sequence[SaveRequest]) -> list[SaveOutcome]:
        """Save events (and charge their claims) in ONE transaction (group commit).

        Nothing is acknowledged until this returns, i.e. until the COMMIT succeeded. The batch
        is one statement on an autocommit connection, so it is its own transaction: PostgreSQL
        commits (and, with synchronous_commit on, flushes the WAL) before it reports the
        statement done, and an error anywhere in it rolls the whole batch back. No BEGIN and
        COMMIT round trips: one send and one reply per batch.
        """
        if not requests:
            return []
        batch = save_batch(requests)
        with metrics.DB_QUERY.labels("save_batch").time():
            async with self._pool.connection() as conn:
                if not conn.autocommit:  # the statement would sit uncommitted, yet be acknowledged
                    raise RuntimeError(
                        "PostgresBatchSaver needs a pool of autocommit connections"
                        " (cluster/store/pool.py create_pool makes one)"
                    )
                cursor = await conn.execute(SAVE_BATCH_SQL, (batch,))
                row = await cursor.fetchone()
        outcomes = [SaveOutcome(value) for value in (row[0] if row else [])]
        if len(outcomes) != len(requests):
            raise RuntimeError(f"saved {len(requests)} events but got {len(outcomes)} outcomes")
        return outcomes


# ---- group commit ------------------------------------------------------------------------------

_Item = tuple[SaveRequest, "asyncio.Future[SaveOutcome]"]


def _is_connection_failure(exc: BaseException) -> bool:
    """Connection-level failures (server gone, pool exhausted) fail the same way one by one."""
    if isinstance(exc, (PoolTimeout, OSError, TimeoutError)):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(exc, psycopg.OperationalError) and (
        sqlstate is None or sqlstate.startswith(("08", "57P"))
    )


class EventWriter:
    """`lanes` independent group-commit loops, each committing through `saver` (with
    PostgresBatchSaver: on its own pooled connection), so one batch can commit while the next
    one is being written. A caller's events always use the same lane (`lane_key`), which keeps
    one client's events committed in the order it sent them."""

    def __init__(
        self, saver: BatchSaver, batch_max: int, lanes: int = 1, linger: float = 0.0
    ) -> None:
        self._saver = saver
        self._batch_max = batch_max
        self._linger = linger
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
        busy = False
        while True:
            batch = [await queue.get()]
            self._take_queued(queue, batch)
            if busy and self._linger and len(batch) < self._batch_max:
                # Under load a short wait gathers more events into this commit: the cost of a
                # batch (a round trip, a commit, the statement's fixed work) is then shared by
                # more events. An idle lane (the last batch was one event and nothing queued
                # behind it) commits at once, so a lone event never waits.
                await asyncio.sleep(self._linger)
                self._take_queued(queue, batch)
            try:
                await self._commit(batch)
            finally:
                for _ in batch:
                    queue.task_done()
            busy = len(batch) > 1 or not queue.empty()

    def _take_queued(self, queue: asyncio.Queue[_Item], batch: list[_Item]) -> None:
        while len(batch) < self._batch_max and not queue.empty():
            batch.append(queue.get_nowait())

    async def _commit(self, batch: list[_Item]) -> None:
        try:
            outcomes = await self._saver.save_many([request for request, _ in batch])
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
