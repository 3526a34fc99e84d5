"""The read side of the event repository: query, stream (for REQ), count, purge, ping.

The write path (batch save, group commit) is cluster/store/writer.py. Queries and counts go
through `reads` (cluster/store/replicas.py: a read replica when one is usable, else the
primary); purges and pings stay on the primary's `pool`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from psycopg import AsyncConnection, AsyncServerCursor
from psycopg_pool import AsyncConnectionPool

from cluster import metrics
from cluster.nostr.event import id_of_encoded
from cluster.nostr.filters import Filter
from cluster.store.archive import ArchiveScope
from cluster.store.counts import CountAnswer, CountCache, count_events
from cluster.store.replicas import ReadRouter
from cluster.store.search import DEFAULT_CONFIG
from cluster.store.sql import build_count, build_select, queryable
from cluster.store.writer import PostgresBatchSaver, SaveOutcome, SaveRequest

PURGE_SQL = (
    "DELETE FROM events WHERE id IN ("
    " SELECT id FROM events WHERE expires_at <= %s LIMIT %s FOR UPDATE SKIP LOCKED)"
)
# The archive tier (cluster/store/archive.py) keeps expires_at: its expired events go the same way.
PURGE_ARCHIVE_SQL = PURGE_SQL.replace("events", "archived_events")


FANOUT_GRACE = 30.0
"""Seconds an accepted event may take to reach every worker through the fan-out, at most."""


class StoredRows(msgspec.Struct):
    raws: list[bytes]
    recent_ids: set[str]  # stored within FANOUT_GRACE: may still arrive as live events


# A DECLAREd cursor is planned for its first 10% by default; the REQ reads it all (up to its
# limits), so keep the plans the statement gets when run directly (cluster/store/sql.py).
CURSOR_PLANS_AS_WHOLE = "SET LOCAL cursor_tuple_fraction = 1"


class RowCursor:
    """One REQ's stored rows, read through a server-side cursor as the caller asks for them:
    the relay holds at most one fetch in memory, and stops at `max_rows` across all filters."""

    def __init__(self, cursor: AsyncServerCursor[tuple[str, datetime]] | None, max_rows: int):
        self._cursor = cursor
        self.remaining = max_rows if cursor is not None else 0
        self.fetched = 0
        self.seconds = 0.0  # time spent in the database, for the query metric
        self._cutoff = datetime.now(UTC) - timedelta(seconds=FANOUT_GRACE)

    async def fetch(self, rows: int) -> StoredRows:
        """Up to `rows` more rows, newest first; empty once the results or the cap are done."""
        wanted = min(max(rows, 1), self.remaining)
        if self._cursor is None or wanted == 0:
            return StoredRows([], set())
        started = time.perf_counter()
        fetched = await self._cursor.fetchmany(wanted)
        self.seconds += time.perf_counter() - started
        self.fetched += len(fetched)
        self.remaining = 0 if len(fetched) < wanted else self.remaining - len(fetched)
        raws = [row[0].encode() for row in fetched]
        cutoff = self._cutoff
        recent = {
            id_of_encoded(raw) for raw, row in zip(raws, fetched, strict=True) if row[1] >= cutoff
        }
        return StoredRows(raws, recent)


class EventStore:
    """Narrow storage interface over PostgreSQL; every SQL string lives in cluster/store."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        archive: ArchiveScope | None = None,
        reads: ReadRouter | None = None,
    ) -> None:
        self.pool = pool
        self.reads = reads if reads is not None else ReadRouter(pool)
        self.archive = archive  # the archive tier's scope (cluster/store/archive.py), if any
        self._saver = PostgresBatchSaver(pool)
        self._counts = CountCache()

    async def save_many(self, requests: Sequence[SaveRequest]) -> list[SaveOutcome]:
        """The write path (cluster/store/writer.py), so a store can be handed to EventWriter."""
        return await self._saver.save_many(requests)

    async def query(self, filters: Sequence[Filter], now: int) -> list[bytes]:
        """Stored events matching any filter, newest first, as JSON ready to splice."""
        return (await self.query_rows(filters, now)).raws

    async def query_rows(
        self, filters: Sequence[Filter], now: int, search_config: str = DEFAULT_CONFIG
    ) -> StoredRows:
        """Like `query`, also naming the events stored in the last FANOUT_GRACE seconds.
        `search_config` is the text search configuration of NIP-50 filters (search.config)."""
        if not queryable(list(filters)):
            return StoredRows([], set())
        sql, params = build_select(list(filters), now, search_config, self.archive)

        async def fetch(conn: AsyncConnection[Any]) -> list[tuple[str, datetime]]:
            cursor = await conn.execute(sql.encode(), params)
            return await cursor.fetchall()

        with metrics.DB_QUERY.labels("query").time():
            rows = await self.reads.run(fetch)
        raws = [row[0].encode() for row in rows]
        cutoff = datetime.now(UTC) - timedelta(seconds=FANOUT_GRACE)
        recent = {
            id_of_encoded(raw) for raw, row in zip(raws, rows, strict=True) if row[1] >= cutoff
        }
        return StoredRows(raws, recent)

    @asynccontextmanager
    async def stream_rows(
        self,
        filters: Sequence[Filter],
        now: int,
        max_rows: int,
        search_config: str = DEFAULT_CONFIG,
    ) -> AsyncIterator[RowCursor]:
        """Like `query_rows`, read in chunks from one server-side cursor (in a transaction on
        one pooled connection, held until the caller leaves the context)."""
        usable = queryable(list(filters))
        if not usable:
            yield RowCursor(None, 0)
            return
        sql, params = build_select(usable, now, search_config, self.archive)
        async with self.reads.connection() as conn, conn.transaction():
            await conn.execute(CURSOR_PLANS_AS_WHOLE)
            async with AsyncServerCursor[tuple[str, datetime]](conn, "req_rows") as cursor:
                await cursor.execute(sql.encode(), params)
                rows = RowCursor(cursor, max_rows)
                try:
                    yield rows
                finally:
                    metrics.DB_QUERY.labels("query").observe(rows.seconds)

    async def count(
        self,
        filters: Sequence[Filter],
        now: int,
        hidden_kinds: Sequence[frozenset[int]] | None = None,
    ) -> int:
        """Events matching any filter, without the kinds `hidden_kinds[i]` hides from filter i."""
        if not any(flt.can_match for flt in filters):
            return 0
        sql, params = build_count(list(filters), now, hidden_kinds, archive=self.archive)

        async def fetch(conn: AsyncConnection[Any]) -> tuple[int] | None:
            cursor = await conn.execute(sql.encode(), params)
            return await cursor.fetchone()

        with metrics.DB_QUERY.labels("count").time():
            row = await self.reads.run(fetch)
        return int(row[0]) if row else 0

    async def count_answer(
        self,
        filters: Sequence[Filter],
        now: int,
        hidden_kinds: Sequence[frozenset[int]] | None = None,
        search_config: str = DEFAULT_CONFIG,
    ) -> CountAnswer:
        """The NIP-45 answer: the count, with HLL registers for a single-tag-value filter, or
        an estimate for filters no index narrows; large slow answers come from the CountCache
        for a while (cluster/store/counts.py)."""
        hidden = tuple(hidden_kinds) if hidden_kinds is not None else None
        key = (tuple(filters), hidden, search_config)
        cached = self._counts.get(key, time.monotonic())
        if cached is not None:
            return cached
        started = time.perf_counter()

        async def fetch(conn: AsyncConnection[Any]) -> CountAnswer:
            return await count_events(conn, filters, now, hidden_kinds, search_config, self.archive)

        with metrics.DB_QUERY.labels("count").time():
            answer = await self.reads.run(fetch)
        self._counts.put(key, answer, time.perf_counter() - started, time.monotonic())
        return answer

    async def discard_broken_connections(self) -> None:
        """After a read failed on a dropped connection (the database restarted): check every
        idle pooled connection now, so the retry and the next queries get live ones (a
        replica's pool is checked by the router when it fails)."""
        await self.pool.check()

    async def purge_expired(self, now: int, batch: int = 1000) -> int:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(PURGE_SQL, (now, batch))
            purged = cursor.rowcount
            cursor = await conn.execute(PURGE_ARCHIVE_SQL, (now, batch))
            return purged + cursor.rowcount

    async def ping(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("SELECT 1")
