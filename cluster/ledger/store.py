"""The ledger's PostgreSQL state: schema `ledger`, its migrations, and channel/claim queries.

Everything lives in the schema `ledger` (tables `ledger.channels`, `ledger.claims`, version
table `ledger.schema_migrations`), so the ledger can share a database with the relay without a
name ever colliding; the migration lock key differs from the relay's too.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from cluster.payments.model import ChannelState, ChannelStatus, Currency, PaymentReason
from cluster.payments.rules import overspends

SCHEMA = "ledger"
# Not the relay's MIGRATION_LOCK_KEY: the two runners may migrate one database at once.
LEDGER_MIGRATION_LOCK_KEY = 7_305_221_020
_FILENAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_CHANNEL_COLUMNS = (
    "channel_id, blockchain, sender, sender_pubkey, recipient, capacity, spent, highest_nonce,"
    " expiration, status"
)


@dataclass(frozen=True)
class LedgerMigration:
    version: int
    name: str
    sql: str


class LedgerError(Exception):
    """A refused operation; the message is what the RPC answers (`<reason>[: details]`)."""


def ledger_migrations() -> list[LedgerMigration]:
    """The migrations shipped in cluster/ledger/migrations, in version order."""
    found = []
    for entry in resources.files("cluster.ledger").joinpath("migrations").iterdir():
        match = _FILENAME.match(entry.name)
        if match:
            found.append(LedgerMigration(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate ledger migration versions: {versions}")
    return found


async def apply_ledger_migrations(conninfo: str) -> list[int]:
    """Apply every pending ledger migration; safe to run from several processes at once."""
    applied_now: list[int] = []
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (LEDGER_MIGRATION_LOCK_KEY,))
        try:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cursor = await conn.execute(f"SELECT version FROM {SCHEMA}.schema_migrations")
            done = {row[0] for row in await cursor.fetchall()}
            for migration in ledger_migrations():
                if migration.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql.encode())
                    await conn.execute(
                        f"INSERT INTO {SCHEMA}.schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                applied_now.append(migration.version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (LEDGER_MIGRATION_LOCK_KEY,))
    return applied_now


def new_channel_id(blockchain: Currency) -> str:
    """`<blockchain lower>:<24 random hex>`: only [a-z0-9:], well inside the tag's alphabet."""
    return f"{blockchain.value.lower()}:{secrets.token_hex(12)}"


def _state(row: dict[str, Any], now: int) -> ChannelState:
    status = ChannelStatus(row["status"])
    if status is ChannelStatus.OPEN and now >= row["expiration"]:
        status = ChannelStatus.EXPIRED
    return ChannelState(
        channel_id=row["channel_id"],
        blockchain=Currency(row["blockchain"]),
        sender=row["sender"],
        sender_pubkey=row["sender_pubkey"],
        recipient=row["recipient"],
        capacity=row["capacity"],
        balance=row["capacity"] - row["spent"],
        highest_nonce=row["highest_nonce"],
        expiration=row["expiration"],
        status=status,
    )


@dataclass(frozen=True)
class RecordedClaim:
    channel_id: str
    nonce: int
    amount: int
    event_id: str
    recorded_at: datetime
    duplicate: bool


class LedgerStore:
    """Channel and claim operations on a pool of autocommit connections."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def ping(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("SELECT 1")

    async def open_channel(
        self,
        *,
        blockchain: Currency,
        sender: str,
        sender_pubkey: str,
        recipient: str,
        capacity: int,
        expiration: int,
        now: int,
    ) -> ChannelState:
        async with self.pool.connection() as conn:
            for _ in range(3):  # 96 random bits: a collision is a bug elsewhere, but retry anyway
                channel_id = new_channel_id(blockchain)
                cursor = await conn.cursor(row_factory=dict_row).execute(
                    f"INSERT INTO {SCHEMA}.channels (channel_id, blockchain, sender,"
                    " sender_pubkey, recipient, capacity, expiration)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
                    f" ON CONFLICT (channel_id) DO NOTHING RETURNING {_CHANNEL_COLUMNS}",
                    (
                        channel_id,
                        blockchain.value,
                        sender,
                        sender_pubkey,
                        recipient,
                        capacity,
                        expiration,
                    ),
                )
                row = await cursor.fetchone()
                if row is not None:
                    return _state(row, now)
        raise LedgerError("internal_error: could not allocate a channel id")

    async def channel_state(self, channel_id: str, now: int) -> ChannelState | None:
        async with self.pool.connection() as conn:
            cursor = await conn.cursor(row_factory=dict_row).execute(
                f"SELECT {_CHANNEL_COLUMNS} FROM {SCHEMA}.channels WHERE channel_id = %s",
                (channel_id,),
            )
            row = await cursor.fetchone()
        return None if row is None else _state(row, now)

    async def close_channel(self, channel_id: str, now: int) -> ChannelState | None:
        """Mark a channel CLOSED (idempotent); None when it does not exist."""
        async with self.pool.connection() as conn:
            cursor = await conn.cursor(row_factory=dict_row).execute(
                f"UPDATE {SCHEMA}.channels"
                " SET status = 'CLOSED', closed_at = COALESCE(closed_at, now())"
                f" WHERE channel_id = %s RETURNING {_CHANNEL_COLUMNS}",
                (channel_id,),
            )
            row = await cursor.fetchone()
        return None if row is None else _state(row, now)

    async def record_claim(
        self, channel_id: str, nonce: int, amount: int, event_id: str
    ) -> RecordedClaim:
        """Store a claim the relay accepted; a replay of the same claim is a no-op.

        Nonces need not arrive in order (several relay workers forward their outboxes
        independently) and the channel's status is not checked: the relay accepted the claim
        while the channel was usable, and settlement must count it. Only the capacity and the
        uniqueness of (channel, nonce) are enforced here.
        """
        async with self.pool.connection() as conn, conn.transaction():
            cursor = await conn.cursor(row_factory=dict_row).execute(
                f"SELECT capacity, spent FROM {SCHEMA}.channels WHERE channel_id = %s FOR UPDATE",
                (channel_id,),
            )
            channel = await cursor.fetchone()
            if channel is None:
                raise LedgerError(PaymentReason.UNKNOWN_CHANNEL.value)
            cursor = await conn.cursor(row_factory=dict_row).execute(
                f"SELECT amount, event_id, recorded_at FROM {SCHEMA}.claims"
                " WHERE channel_id = %s AND nonce = %s",
                (channel_id, nonce),
            )
            existing = await cursor.fetchone()
            if existing is not None:
                if existing["amount"] != amount or existing["event_id"] != event_id:
                    raise LedgerError(
                        f"nonce_conflict: nonce {nonce} of {channel_id} was recorded for event"
                        f" {existing['event_id']} with amount {existing['amount']}"
                    )
                return RecordedClaim(
                    channel_id, nonce, amount, event_id, existing["recorded_at"], duplicate=True
                )
            if overspends(amount, channel["capacity"] - channel["spent"]):
                raise LedgerError(
                    f"{PaymentReason.INSUFFICIENT_BALANCE.value}: {amount} exceeds the remaining"
                    f" {channel['capacity'] - channel['spent']}"
                )
            cursor = await conn.cursor(row_factory=dict_row).execute(
                f"INSERT INTO {SCHEMA}.claims (channel_id, nonce, amount, event_id)"
                " VALUES (%s, %s, %s, %s) RETURNING recorded_at",
                (channel_id, nonce, amount, event_id),
            )
            inserted = await cursor.fetchone()
            assert inserted is not None
            await conn.execute(
                f"UPDATE {SCHEMA}.channels SET spent = spent + %s,"
                " highest_nonce = GREATEST(highest_nonce, %s) WHERE channel_id = %s",
                (amount, nonce, channel_id),
            )
        return RecordedClaim(
            channel_id, nonce, amount, event_id, inserted["recorded_at"], duplicate=False
        )

    async def total_received(self) -> int:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT COALESCE(sum(spent), 0)::numeric FROM {SCHEMA}.channels"
            )
            row = await cursor.fetchone()
        assert row is not None
        return int(row[0])
