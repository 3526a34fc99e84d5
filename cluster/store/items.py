"""NIP-77 item lists: the (created_at, id) of every stored event matching one filter.

One statement, built by a pure function like cluster/store/sql.py's: the filter's conditions
come from `count_conditions` (so tag filters use the event_tags index, expired events are left
out, exactly as COUNT and REQ see them), plus the kinds the client may not read (DMs,
cluster/nostr/dm_access.py). The rows never reach Python one by one: PostgreSQL sorts them by
(created_at, id) and folds them into two byte strings (8-byte big-endian timestamps from
`int8send`, and the 32-byte ids), which `StorageBuilder.from_big_endian` takes as they are.
The inner LIMIT (max_items + 1) bounds the work of a filter that matches too much: the caller
then answers NEG-ERR `blocked:` from the count alone.
"""

from __future__ import annotations

from typing import Any

import msgspec
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from cluster import metrics
from cluster.nostr.filters import Filter
from cluster.store.archive import ArchiveScope
from cluster.store.replicas import ReadRouter
from cluster.store.sql import ARCHIVE, hidden_conditions, reaches_archive


class ItemList(msgspec.Struct, frozen=True):
    """`count` items; when count <= the query's max_items, their timestamps and ids in order."""

    count: int
    timestamps: bytes
    ids: bytes


def build_items(
    flt: Filter,
    now: int,
    hidden_kinds: frozenset[int],
    max_items: int,
    archive: ArchiveScope | None = None,
) -> tuple[str, list[Any]]:
    """The statement returning (count, timestamps, ids) for up to max_items + 1 matches (of
    both tiers when the filter reaches the archive: an event is in one tier only)."""
    where, params = hidden_conditions(flt, hidden_kinds, now)
    if reaches_archive(flt, now, archive):
        old, old_params = hidden_conditions(flt, hidden_kinds, now, tables=ARCHIVE)
        where += f" UNION ALL SELECT created_at, id FROM {ARCHIVE.events} WHERE {old}"
        params = [*params, *old_params]
    order = "ORDER BY created_at, id"
    sql = (
        "SELECT count(*),"
        f" coalesce(string_agg(int8send(created_at), ''::bytea {order}), ''::bytea),"
        f" coalesce(string_agg(id, ''::bytea {order}), ''::bytea)"
        f" FROM (SELECT created_at, id FROM events WHERE {where} LIMIT %s) AS items"
    )
    return sql, [*params, max_items + 1]


async def fetch_items(
    pool: AsyncConnectionPool | ReadRouter,
    flt: Filter,
    now: int,
    hidden_kinds: frozenset[int],
    max_items: int,
    archive: ArchiveScope | None = None,
) -> ItemList:
    """The filter's items, or only their count when there are more than `max_items`; read
    through `pool`, or a read replica when it is the relay's ReadRouter."""
    if not flt.can_match:
        return ItemList(0, b"", b"")
    sql, params = build_items(flt, now, hidden_kinds, max_items, archive)
    reads = pool if isinstance(pool, ReadRouter) else ReadRouter(pool)

    async def fetch(conn: AsyncConnection[Any]) -> tuple[Any, ...] | None:
        cursor = await conn.execute(sql.encode(), params)
        return await cursor.fetchone()

    with metrics.DB_QUERY.labels("negentropy").time():
        row = await reads.run(fetch)
    if row is None:
        return ItemList(0, b"", b"")
    count = int(row[0])
    if count > max_items:
        return ItemList(count, b"", b"")
    return ItemList(count, bytes(row[1]), bytes(row[2]))
