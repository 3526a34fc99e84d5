"""The read side of the event repository: query, count, purge, ping.

The write path (batch save, group commit) is cluster/store/writer.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import msgspec
from psycopg_pool import AsyncConnectionPool

from cluster import metrics
from cluster.nostr.event import id_of_encoded
from cluster.nostr.filters import Filter
from cluster.store.sql import build_count, build_select, queryable
from cluster.store.writer import PostgresBatchSaver, SaveOutcome, SaveRequest

PURGE_SQL = (
    "DELETE FROM events WHERE id IN ("
    " SELECT id FROM events WHERE expires_at <= %s LIMIT %s FOR UPDATE SKIP LOCKED)"
)


FANOUT_GRACE = 30.0
"""Seconds an accepted event may take to reach every worker through the fan-out, at most."""


class StoredRows(msgspec.Struct):
    raws: list[bytes]
    recent_ids: set[str]  # stored within FANOUT_GRACE: may still arrive as live events


class EventStore:
    """Narrow storage interface over PostgreSQL; every SQL string lives in cluster/store."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self._saver = PostgresBatchSaver(pool)

    async def save_many(self, requests: Sequence[SaveRequest]) -> list[SaveOutcome]:
        """The write path (cluster/store/writer.py), so a store can be handed to EventWriter."""
        return await self._saver.save_many(requests)

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

    async def count(
        self,
        filters: Sequence[Filter],
        now: int,
        hidden_kinds: Sequence[frozenset[int]] | None = None,
    ) -> int:
        """Events matching any filter, without the kinds `hidden_kinds[i]` hides from filter i."""
        if not any(flt.can_match for flt in filters):
            return 0
        sql, params = build_count(list(filters), now, hidden_kinds)
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
