"""The operator's NIP-86 decisions in PostgreSQL (migration 009): read whole, written one by one.

PostgreSQL is the truth; every worker holds a copy (cluster/relay/moderation.py) that it
rebuilds from `load_moderation` whenever a decision changes anywhere in the cluster, so the
EVENT path never queries these tables. They are small (an operator's lists), so a full read is
the simplest correct refresh: no change log, no ordering between invalidations to get wrong.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import msgspec
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

INFO_FIELDS = ("name", "description", "icon")
"""NIP-11 fields `changerelay*` may override."""


class ModerationState(msgspec.Struct, frozen=True):
    """Every decision at one moment, keyed for set lookups: hex key or id -> reason."""

    banned_pubkeys: Mapping[str, str] = msgspec.field(default_factory=dict)
    allowed_pubkeys: Mapping[str, str] = msgspec.field(default_factory=dict)
    banned_events: Mapping[str, str] = msgspec.field(default_factory=dict)
    allowed_kinds: frozenset[int] = frozenset()
    blocked_ips: Mapping[str, str] = msgspec.field(default_factory=dict)
    """Canonical address text (`ipaddress` spelling) -> reason."""
    info: Mapping[str, str] = msgspec.field(default_factory=dict)
    """NIP-11 overrides: a subset of INFO_FIELDS -> value."""


def canonical_ip(text: str) -> str | None:
    """The one spelling of an address (`::FFFF:1.2.3.4` is `1.2.3.4`), or None if not one."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


async def load_moderation(pool: AsyncConnectionPool[Any]) -> ModerationState:
    """Read every decision: six small full-table reads in one REPEATABLE READ transaction, so
    the lists are of one moment."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")

        async def pairs(sql: str) -> dict[str, str]:
            cursor = await conn.execute(sql)
            return {str(key): str(value) for key, value in await cursor.fetchall()}

        banned = await pairs("SELECT encode(pubkey, 'hex'), reason FROM moderation_banned_pubkeys")
        allowed = await pairs(
            "SELECT encode(pubkey, 'hex'), reason FROM moderation_allowed_pubkeys"
        )
        events = await pairs("SELECT encode(id, 'hex'), reason FROM moderation_banned_events")
        ips = await pairs("SELECT host(ip), reason FROM moderation_blocked_ips")
        info = await pairs("SELECT field, value FROM moderation_relay_info")
        cursor = await conn.execute("SELECT kind FROM moderation_allowed_kinds")
        kinds = frozenset(int(row[0]) for row in await cursor.fetchall())
    return ModerationState(
        banned_pubkeys=banned,
        allowed_pubkeys=allowed,
        banned_events=events,
        allowed_kinds=kinds,
        blocked_ips={canonical_ip(ip) or ip: reason for ip, reason in ips.items()},
        info=info,
    )


_PUBKEY_TABLES = {"banned": "moderation_banned_pubkeys", "allowed": "moderation_allowed_pubkeys"}


async def set_pubkey(
    pool: AsyncConnectionPool[Any], listing: str, pubkey: str, reason: str, present: bool
) -> None:
    """Add `pubkey` to (present) or remove it from the `banned` or `allowed` list."""
    table = sql.Identifier(_PUBKEY_TABLES[listing])  # a fixed name, never client text
    async with pool.connection() as conn:
        if present:
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {} (pubkey, reason) VALUES (%s, %s) ON CONFLICT (pubkey)"
                    " DO UPDATE SET reason = excluded.reason, decided_at = now()"
                ).format(table),
                (bytes.fromhex(pubkey), reason),
            )
        else:
            await conn.execute(
                sql.SQL("DELETE FROM {} WHERE pubkey = %s").format(table),
                (bytes.fromhex(pubkey),),
            )


async def ban_event(pool: AsyncConnectionPool[Any], event_id: str, reason: str) -> int:
    """Record the ban and delete the stored event in one transaction; returns rows deleted.

    The tag triggers of migration 004 remove its `event_tags` rows with it.
    """
    key = bytes.fromhex(event_id)
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO moderation_banned_events (id, reason) VALUES (%s, %s)"
            " ON CONFLICT (id) DO UPDATE SET reason = excluded.reason, decided_at = now()",
            (key, reason),
        )
        cursor = await conn.execute("DELETE FROM events WHERE id = %s", (key,))
        return int(cursor.rowcount)


async def allow_event(pool: AsyncConnectionPool[Any], event_id: str) -> None:
    """Lift a ban: the event may be published again (what was deleted stays deleted)."""
    async with pool.connection() as conn:
        await conn.execute(
            "DELETE FROM moderation_banned_events WHERE id = %s", (bytes.fromhex(event_id),)
        )


async def set_allowed_kind(pool: AsyncConnectionPool[Any], kind: int, present: bool) -> None:
    async with pool.connection() as conn:
        if present:
            await conn.execute(
                "INSERT INTO moderation_allowed_kinds (kind) VALUES (%s) ON CONFLICT DO NOTHING",
                (kind,),
            )
        else:
            await conn.execute("DELETE FROM moderation_allowed_kinds WHERE kind = %s", (kind,))


async def set_blocked_ip(
    pool: AsyncConnectionPool[Any], ip: str, reason: str, present: bool
) -> None:
    """`ip` must already be canonical (`canonical_ip`)."""
    async with pool.connection() as conn:
        if present:
            await conn.execute(
                "INSERT INTO moderation_blocked_ips (ip, reason) VALUES (%s::inet, %s)"
                " ON CONFLICT (ip) DO UPDATE SET reason = excluded.reason, decided_at = now()",
                (ip, reason),
            )
        else:
            await conn.execute("DELETE FROM moderation_blocked_ips WHERE ip = %s::inet", (ip,))


async def set_relay_info(pool: AsyncConnectionPool[Any], field: str, value: str) -> None:
    """Override one NIP-11 field (one of INFO_FIELDS) for the whole cluster."""
    if field not in INFO_FIELDS:
        raise ValueError(f"not a relay info field: {field}")
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO moderation_relay_info (field, value) VALUES (%s, %s)"
            " ON CONFLICT (field) DO UPDATE SET value = excluded.value, decided_at = now()",
            (field, value),
        )


class PostgresDecisions:
    """The functions above bound to one pool: what the NIP-86 methods write through."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool

    async def load(self) -> ModerationState:
        return await load_moderation(self.pool)

    async def set_pubkey(self, listing: str, pubkey: str, reason: str, present: bool) -> None:
        await set_pubkey(self.pool, listing, pubkey, reason, present)

    async def ban_event(self, event_id: str, reason: str) -> int:
        return await ban_event(self.pool, event_id, reason)

    async def allow_event(self, event_id: str) -> None:
        await allow_event(self.pool, event_id)

    async def set_allowed_kind(self, kind: int, present: bool) -> None:
        await set_allowed_kind(self.pool, kind, present)

    async def set_blocked_ip(self, ip: str, reason: str, present: bool) -> None:
        await set_blocked_ip(self.pool, ip, reason, present)

    async def set_relay_info(self, field: str, value: str) -> None:
        await set_relay_info(self.pool, field, value)
