"""The event repository: save (with replace/delete rules), query, count and purge."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import msgspec
from psycopg_pool import AsyncConnectionPool

from cluster import metrics
from cluster.nostr.deletion import deletion_targets
from cluster.nostr.event import Event, id_of_encoded
from cluster.nostr.filters import Filter
from cluster.nostr.kinds import DELETION
from cluster.payments.model import ChannelState, PaymentClaim
from cluster.store.sql import build_count, build_select, queryable
from cluster.store.text import pg_text

# Binary parameters (%b): arrays travel without text escaping (psycopg's text array dumper
# runs a regex over every element) and bytea without hex encoding.
SAVE_BATCH_SQL = (
    "SELECT relay_save_events(%b::bytea[], %b::bytea[], %b::bigint[], %b::integer[],"
    " %b::text[], %b::bigint[], %b::integer[], %b::text[], %b::text[],"
    " %b::integer[], %b::text[], %b::integer[], %b::text[],"
    " %b::text[], %b::bigint[], %b::bigint[], %b::text[], %b::text[], %b::bigint[],"
    " %b::bigint[], %b::text[])"
)
# Positions in save_parameters() of the ragged lists that travel flattened with counts.
_RAGGED = (6, 8, 9)
NO_PAYMENT = (None,) * 8
PURGE_SQL = (
    "DELETE FROM events WHERE id IN ("
    " SELECT id FROM events WHERE expires_at <= %s LIMIT %s FOR UPDATE SKIP LOCKED)"
)


class SaveOutcome(StrEnum):
    """What the database decided for one event (see relay_save_event in 001_events.sql)."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    SUPERSEDED = "superseded"
    DELETED = "deleted"
    STALE_NONCE = "stale_nonce"
    INSUFFICIENT_BALANCE = "insufficient_balance"


class PaymentRecord(msgspec.Struct, frozen=True):
    """The verified claim to charge with the event, and the channel state it was checked against."""

    claim: PaymentClaim
    channel: ChannelState

    def parameters(self) -> tuple[Any, ...]:
        return (
            self.claim.channel_id,
            self.claim.nonce,
            self.claim.amount,
            str(self.channel.blockchain),
            self.channel.sender_pubkey,
            self.channel.capacity,
            self.channel.expiration,
            str(self.channel.status),
        )


class SaveRequest(msgspec.Struct, frozen=True):
    event: Event
    raw: str
    payment: PaymentRecord | None = None


def save_parameters(request: SaveRequest) -> tuple[Any, ...]:
    event = request.event
    delete_ids: list[str] = []
    delete_addresses: list[str] = []
    if event.kind == DELETION:
        delete_ids, delete_addresses = deletion_targets(event)
    return (
        bytes.fromhex(event.id),
        bytes.fromhex(event.pubkey),
        event.created_at,
        event.kind,
        None if event.address is None else pg_text(event.address),
        event.expiration,
        [pg_text(value) for value in event.indexed_tags()],
        request.raw,
        delete_ids,
        [pg_text(address) for address in delete_addresses],
        *(request.payment.parameters() if request.payment else NO_PAYMENT),
    )


def batch_columns(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """Per-event parameter tuples → the parallel arrays relay_save_events takes (003)."""
    columns: list[list[Any]] = []
    for position in range(len(rows[0])):
        values = [row[position] for row in rows]
        if position in _RAGGED:
            columns.append([len(value) for value in values])
            columns.append([item for value in values for item in value])
        else:
            columns.append(values)
    return columns


FANOUT_GRACE = 30.0
"""Seconds an accepted event may take to reach every worker through the fan-out, at most."""


class StoredRows(msgspec.Struct):
    raws: list[bytes]
    recent_ids: set[str]  # stored within FANOUT_GRACE: may still arrive as live events


class EventStore:
    """Narrow storage interface over PostgreSQL; every SQL string lives in cluster/store."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def save_many(self, items: Sequence[SaveRequest]) -> list[SaveOutcome]:
        """Save events (and charge their claims) in ONE transaction (group commit).

        Nothing is acknowledged until this returns, i.e. until the COMMIT succeeded. The batch
        is one statement on an autocommit connection, so it is its own transaction: PostgreSQL
        commits (and, with synchronous_commit on, flushes the WAL) before it reports the
        statement done, and an error anywhere in it rolls the whole batch back. No BEGIN and
        COMMIT round trips: one send and one reply per batch.
        """
        if not items:
            return []
        columns = batch_columns([save_parameters(item) for item in items])
        with metrics.DB_QUERY.labels("save_batch").time():
            async with self.pool.connection() as conn:
                if not conn.autocommit:  # the statement would sit uncommitted, yet be acknowledged
                    raise RuntimeError("EventStore needs a pool of autocommit connections")
                cursor = await conn.execute(SAVE_BATCH_SQL, columns)
                row = await cursor.fetchone()
        outcomes = [SaveOutcome(value) for value in (row[0] if row else [])]
        if len(outcomes) != len(items):
            raise RuntimeError(f"saved {len(items)} events but got {len(outcomes)} outcomes")
        return outcomes

    async def query(self, filters: Sequence[Filter], now: int) -> list[bytes]:
        """Stored events matching any filter, newest first, as JSON ready to splice."""
        return (await self.query_rows(filters, now)).raws

    async def query_rows(self, filters: Sequence[Filter], now: int) -> StoredRows:
        """Like `query`, also naming the events stored in the last FANOUT_GRACE seconds."""
        if not queryable(list(filters)):
            return StoredRows([], set())
        sql, params = build_select(list(filters), now)
        with metrics.DB_QUERY.labels("query").time():
            async with self.pool.connection() as conn:
                cursor = await conn.execute(sql.encode(), params)
                rows = await cursor.fetchall()
        raws = [row[0].encode() for row in rows]
        cutoff = datetime.now(UTC) - timedelta(seconds=FANOUT_GRACE)
        recent = {
            id_of_encoded(raw) for raw, row in zip(raws, rows, strict=True) if row[1] >= cutoff
        }
        return StoredRows(raws, recent)

    async def count(self, filters: Sequence[Filter], now: int) -> int:
        if not any(flt.can_match for flt in filters):
            return 0
        sql, params = build_count(list(filters), now)
        with metrics.DB_QUERY.labels("count").time():
            async with self.pool.connection() as conn:
                cursor = await conn.execute(sql.encode(), params)
                row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def purge_expired(self, now: int, batch: int = 1000) -> int:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(PURGE_SQL, (now, batch))
            return cursor.rowcount

    async def ping(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("SELECT 1")
