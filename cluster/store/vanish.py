"""NIP-62 in the store: apply a request to vanish (functions/035_vanish.sql) in one transaction.

It runs on its own autocommit connection, not through the group-commit writer: a request is
rare, takes a table lock, and may delete many rows, none of which should hold up a batch of
ordinary events. Durable before the relay answers OK: the statement commits before it returns.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

from cluster.nostr.event import Event
from cluster.store.pool import statement_timeout

VANISH_SQL = "SELECT relay_vanish(%s, %s, %s, %s)"
VANISH_TIMEOUT_MS = 60_000
"""A prolific author's deletion may take seconds; it still must not hold writers back forever."""


async def apply_vanish(pool: AsyncConnectionPool[Any], event: Event, raw: str) -> int:
    """Delete what `event` (kind 62, for this relay) asks to; returns how many events went.
    On the query pool (a QueryPool) it runs under VANISH_TIMEOUT_MS, not the REQ timeout."""
    with statement_timeout(VANISH_TIMEOUT_MS):
        async with pool.connection() as conn:
            cursor = await conn.execute(
                VANISH_SQL,
                (bytes.fromhex(event.pubkey), event.created_at, bytes.fromhex(event.id), raw),
            )
            row = await cursor.fetchone()
    return int(row[0]) if row else 0
