"""Stored events in bulk for `relay-cluster export`: one filter, oldest first, no limit.

A server-side cursor reads CHUNK_ROWS rows at a time, so exporting millions of events holds a
chunk in memory, not the table. Rows are the events' JSON exactly as the relay serves them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import psycopg

from cluster.nostr.filters import Filter
from cluster.store.sql import ARCHIVE, LIVE, count_conditions

CHUNK_ROWS = 2_000


async def exported_rows(
    database_url: str, flt: Filter, *, archive: bool = False
) -> AsyncIterator[str]:
    """Every stored, unexpired event matching `flt` (its limit ignored), by created_at then id;
    `archive`: those of the archive tier (cluster/store/archive.py) instead of the live one."""
    tables = ARCHIVE if archive else LIVE
    where, params = count_conditions(flt, int(time.time()), tables=tables)
    sql = f"SELECT raw FROM {tables.events} WHERE {where} ORDER BY created_at, id"
    async with (
        await psycopg.AsyncConnection.connect(database_url) as conn,
        conn.cursor(name="relay_export") as cursor,
    ):
        cursor.itersize = CHUNK_ROWS
        await cursor.execute(sql, params)
        async for (raw,) in cursor:
            yield str(raw)
