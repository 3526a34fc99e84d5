"""The write path: a batch of events saved in ONE statement, and the group commit that feeds it.

Read top to bottom: `SaveRequest` (one event, its JSON, the claim to charge) -> `SaveColumns`
(the batch as the named parallel arrays relay_save_events takes) -> `PostgresBatchSaver` (one
statement on an autocommit connection = one transaction) -> `EventWriter` (lanes that commit
whatever queued up together, and retry a failed batch one event per transaction).

Under load many events share one transaction (one fsync), so throughput is not capped by
per-event commits; at low load a batch is one event and latency is one commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Annotated, Any, NamedTuple, Protocol, get_args, get_type_hints

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


def event_row(event: Event, raw: str) -> EventRow:
    """The stored form of an event: ids as bytes, text PostgreSQL can hold (`pg_text`)."""
    return EventRow(
        bytes.fromhex(event.id),
        bytes.fromhex(event.pubkey),
        event.created_at,
        event.kind,
        None if event.address is None else pg_text(event.address),
        event.expiration,
        [pg_text(value) for value in event.indexed_tags()],
        raw,
    )


@dataclass(frozen=True)
class SqlArray:
    """The PostgreSQL element type a `SaveColumns` field travels as (a binary array, `%b`)."""

    element: str


Byteas = Annotated[list[bytes], SqlArray("bytea")]
Integers = Annotated[list[int], SqlArray("integer")]
Bigints = Annotated[list[int], SqlArray("bigint")]
NullBigints = Annotated[list[int | None], SqlArray("bigint")]
Texts = Annotated[list[str], SqlArray("text")]
NullTexts = Annotated[list[str | None], SqlArray("text")]


@dataclass(frozen=True, slots=True)
class SaveColumns:
    """A batch as the parallel arrays of relay_save_events (functions/060_save_events.sql).

    Element i of each per-event array belongs to event i; ragged lists (tag values, deletion
    targets) travel flattened with a count per event. Every field is bound BY NAME to the SQL
    parameter `p_<field>` (`SAVE_BATCH_SQL`), so no array can land in another's place; the
    fields are the function's parameters in order, which a unit test checks against the file.
    """

    ids: Byteas
    pubkeys: Byteas
    created_at: Bigints
    kinds: Integers
    addresses: NullTexts
    expires_at: NullBigints
    tag_counts: Integers
    tagvalues: Texts
    raws: Texts
    delete_id_counts: Integers
    delete_ids: Texts
    delete_address_counts: Integers
    delete_addresses: Texts
    # The charge of each event (all None for an unpaid one): cluster/store/charges.py.
    channels: NullTexts
    nonces: NullBigints
    amounts: NullBigints
    blockchains: NullTexts
    sender_pubkeys: NullTexts
    capacities: NullBigints
    expirations: NullBigints
    statuses: NullTexts

    def parameters(self) -> dict[str, list[Any]]:
        """The named parameters of `SAVE_BATCH_SQL`."""
        return {column.name: getattr(self, column.name) for column in fields(self)}


def save_columns(requests: Sequence[SaveRequest]) -> SaveColumns:
    """The one place requests become relay_save_events' arrays."""
    rows = [event_row(request.event, request.raw) for request in requests]
    targets = [_deletion_targets(request.event) for request in requests]
    charges = [request.payment for request in requests]
    return SaveColumns(
        ids=[row.id for row in rows],
        pubkeys=[row.pubkey for row in rows],
        created_at=[row.created_at for row in rows],
        kinds=[row.kind for row in rows],
        addresses=[row.address for row in rows],
        expires_at=[row.expires_at for row in rows],
        tag_counts=[len(row.tagvalues) for row in rows],
        tagvalues=[value for row in rows for value in row.tagvalues],
        raws=[row.raw for row in rows],
        delete_id_counts=[len(ids) for ids, _ in targets],
        delete_ids=[target for ids, _ in targets for target in ids],
        delete_address_counts=[len(addresses) for _, addresses in targets],
        delete_addresses=[target for _, addresses in targets for target in addresses],
        channels=[charge.channel_id if charge else None for charge in charges],
        nonces=[charge.nonce if charge else None for charge in charges],
        amounts=[charge.amount if charge else None for charge in charges],
        blockchains=[charge.currency if charge else None for charge in charges],
        sender_pubkeys=[charge.sender_pubkey if charge else None for charge in charges],
        capacities=[charge.capacity if charge else None for charge in charges],
        expirations=[charge.expiration if charge else None for charge in charges],
        statuses=[charge.status if charge else None for charge in charges],
    )


def _deletion_targets(event: Event) -> tuple[list[str], list[str]]:
    """NIP-09 ids and addresses a kind-5 event deletes (text PostgreSQL can hold); else none."""
    if event.kind != DELETION:
        return [], []
    ids, addresses = deletion_targets(event)
    return ids, [pg_text(address) for address in addresses]


def _save_batch_sql() -> str:
    """`SELECT relay_save_events(p_ids => %(ids)b::bytea[], ...)`, from SaveColumns' fields."""
    hints = get_type_hints(SaveColumns, include_extras=True)
    arguments = []
    for column in fields(SaveColumns):
        (array,) = [meta for meta in get_args(hints[column.name]) if isinstance(meta, SqlArray)]
        arguments.append(f"p_{column.name} => %({column.name})b::{array.element}[]")
    return f"SELECT relay_save_events({', '.join(arguments)})"


# Binary parameters (%b): arrays travel without text escaping (psycopg's text array dumper
# runs a regex over every element) and bytea without hex encoding.
SAVE_BATCH_SQL = _save_batch_sql()


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
        parameters = save_columns(requests).parameters()
        with metrics.DB_QUERY.labels("save_batch").time():
            async with self._pool.connection() as conn:
                if not conn.autocommit:  # the statement would sit uncommitted, yet be acknowledged
                    raise RuntimeError(
                        "PostgresBatchSaver needs a pool of autocommit connections"
                        " (cluster/store/pool.py create_pool makes one)"
                    )
                cursor = await conn.execute(SAVE_BATCH_SQL, parameters)
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

    def __init__(self, saver: BatchSaver, batch_max: int, lanes: int = 1) -> None:
        self._saver = saver
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
