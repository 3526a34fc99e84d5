"""Payment tables: operator price overrides, the relay's channel accounting, the claim outbox."""

from __future__ import annotations

from collections.abc import Sequence
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
    id: int
    channel_id: str
    nonce: int
    amount: int
    event_id: str
    attempts: int


CLAIM_DUE_SQL = (
    "SELECT id, channel_id, nonce, amount, event_id, attempts FROM payment_outbox"
    " WHERE acked_at IS NULL AND next_attempt_at <= now()"
    " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED"
)


async def claim_due_entries(conn: AsyncConnection[Any], batch: int) -> list[OutboxEntry]:
    """Lock due entries for this transaction; other workers skip them (no double forwarding)."""
    cursor = await conn.execute(CLAIM_DUE_SQL, (batch,))
    return [
        OutboxEntry(row[0], row[1], row[2], row[3], bytes(row[4]).hex(), row[5])
        for row in await cursor.fetchall()
    ]


async def mark_forwarded(conn: AsyncConnection[Any], ids: Sequence[int]) -> None:
    if ids:
        await conn.execute(
            "UPDATE payment_outbox SET acked_at = now(), attempts = attempts + 1,"
            " last_error = NULL WHERE id = ANY(%s)",
            (list(ids),),
        )


async def postpone(conn: AsyncConnection[Any], entry_id: int, delay: float, error: str) -> None:
    await conn.execute(
        "UPDATE payment_outbox SET attempts = attempts + 1, last_error = %s,"
        " next_attempt_at = now() + make_interval(secs => %s) WHERE id = %s",
        (error[:500], delay, entry_id),
    )


async def outbox_backlog(pool: AsyncConnectionPool) -> int:
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT count(*) FROM payment_outbox WHERE acked_at IS NULL")
        row = await cursor.fetchone()
    return int(row[0]) if row else 0
