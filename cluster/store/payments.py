"""Payment tables: operator price overrides, the relay's channel accounting, the claim outbox.

The outbox functions never hold a transaction across a call to the node: a batch is leased in
one statement, forwarded with no connection held, and its outcome recorded in one short
transaction (cluster/payments/outbox.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool


async def load_kind_prices(pool: AsyncConnectionPool) -> dict[int, int]:
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT kind, sats FROM kind_prices")
        return {kind: sats for kind, sats in await cursor.fetchall()}


async def set_kind_price(conn: AsyncConnection[Any], kind: int, sats: int | None) -> None:
    """Set an override (None removes it, falling back to the configured price)."""
    if sats is None:
        await conn.execute("DELETE FROM kind_prices WHERE kind = %s", (kind,))
    else:
        await conn.execute(
            "INSERT INTO kind_prices (kind, sats) VALUES (%s, %s) ON CONFLICT (kind)"
            " DO UPDATE SET sats = excluded.sats, updated_at = now()",
            (kind, sats),
        )


class ChannelAccount(msgspec.Struct, frozen=True):
    channel_id: str
    capacity: int
    spent: int
    highest_nonce: int
    claims: int


async def channel_account(pool: AsyncConnectionPool, channel_id: str) -> ChannelAccount | None:
    """What this relay accepted on a channel (for operators, tests and the CLI)."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT c.channel_id, c.capacity, c.spent, c.highest_nonce,"
            " (SELECT count(*) FROM payment_claims k WHERE k.channel_id = c.channel_id)"
            " FROM payment_channels c WHERE c.channel_id = %s",
            (channel_id,),
        )
        row = await cursor.fetchone()
    return None if row is None else ChannelAccount(*row)


class OutboxEntry(msgspec.Struct, frozen=True):
    """A leased outbox row: `leased_until` is its next_attempt_at while this worker holds it."""

    id: int
    channel_id: str
    nonce: int
    amount: int
    event_id: str
    attempts: int  # attempts finished before this lease
    leased_until: datetime


# A lease is next_attempt_at pushed past the forwarding time, in one autocommitted statement:
# other workers skip the row until the lease ends, and no transaction stays open while the
# node is called. SKIP LOCKED lets two workers lease at the same moment without waiting on each
# other; under READ COMMITTED a row another worker leased meanwhile is re-checked and dropped.
LEASE_DUE_SQL = (
    "UPDATE payment_outbox o SET next_attempt_at = now() + make_interval(secs => %(lease)s)"
    " FROM (SELECT id FROM payment_outbox WHERE acked_at IS NULL AND next_attempt_at <= now()"
    " ORDER BY id LIMIT %(batch)s FOR UPDATE SKIP LOCKED) due"
    " WHERE o.id = due.id"
    " RETURNING o.id, o.channel_id, o.nonce, o.amount, o.event_id, o.attempts, o.next_attempt_at"
)


async def lease_due_entries(
    pool: AsyncConnectionPool, batch: int, lease: float
) -> list[OutboxEntry]:
    """Lease up to `batch` due rows for `lease` seconds and give the connection back at once."""
    async with pool.connection() as conn, conn.transaction():
        cursor = await conn.execute(LEASE_DUE_SQL, {"lease": lease, "batch": batch})
        rows = await cursor.fetchall()
    return sorted(
        (
            OutboxEntry(row[0], row[1], row[2], row[3], bytes(row[4]).hex(), row[5], row[6])
            for row in rows
        ),
        key=lambda entry: entry.id,
    )


async def mark_forwarded(conn: AsyncConnection[Any], ids: Sequence[int]) -> None:
    """The node recorded these claims: true whoever holds the lease now."""
    if ids:
        await conn.execute(
            "UPDATE payment_outbox SET acked_at = now(), attempts = attempts + 1,"
            " last_error = NULL WHERE id = ANY(%s) AND acked_at IS NULL",
            (list(ids),),
        )


async def postpone(
    conn: AsyncConnection[Any], entry: OutboxEntry, delay: float, error: str
) -> None:
    """Retry after `delay`, unless the lease expired and another worker holds the row now."""
    await conn.execute(
        "UPDATE payment_outbox SET attempts = attempts + 1, last_error = %s,"
        " next_attempt_at = now() + make_interval(secs => %s)"
        " WHERE id = %s AND acked_at IS NULL AND next_attempt_at = %s",
        (error[:500], delay, entry.id, entry.leased_until),
    )


async def release(conn: AsyncConnection[Any], entries: Sequence[OutboxEntry]) -> None:
    """Rows leased but not tried (the batch stopped): due again at once, no attempt counted."""
    for entry in entries:
        await conn.execute(
            "UPDATE payment_outbox SET next_attempt_at = now()"
            " WHERE id = %s AND acked_at IS NULL AND next_attempt_at = %s",
            (entry.id, entry.leased_until),
        )


async def bury(conn: AsyncConnection[Any], entry_id: int, error: str) -> bool:
    """Move a row the node refused for good to payment_outbox_dead; False if it was gone."""
    cursor = await conn.execute(
        "WITH moved AS (DELETE FROM payment_outbox WHERE id = %s AND acked_at IS NULL"
        " RETURNING id, channel_id, nonce, amount, event_id, attempts, created_at)"
        " INSERT INTO payment_outbox_dead"
        " (id, channel_id, nonce, amount, event_id, attempts, created_at, error)"
        " SELECT id, channel_id, nonce, amount, event_id, attempts + 1, created_at, %s"
        " FROM moved",
        (entry_id, error[:500]),
    )
    return cursor.rowcount > 0


class DeadLetter(msgspec.Struct, frozen=True):
    id: int
    channel_id: str
    nonce: int
    amount: int
    attempts: int
    error: str


async def dead_letters(pool: AsyncConnectionPool) -> list[DeadLetter]:
    """Refused claims, oldest first (for operators, tests and the CLI)."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT id, channel_id, nonce, amount, attempts, error FROM payment_outbox_dead"
            " ORDER BY id"
        )
        return [DeadLetter(*row) for row in await cursor.fetchall()]


async def outbox_backlog(pool: AsyncConnectionPool) -> int:
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT count(*) FROM payment_outbox WHERE acked_at IS NULL")
        row = await cursor.fetchone()
    return int(row[0]) if row else 0
