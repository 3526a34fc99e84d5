"""Charging in the save transaction (relay_charge_claim via relay_save_event), real PostgreSQL.

Each claim is charged exactly once, with its event; a refused charge stores nothing, and an event
that is not stored (duplicate, superseded, deleted) is never charged.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from cluster.config import DatabaseSettings
from cluster.nostr.event import Event, encode_event
from cluster.nostr.signing import Signer
from cluster.store.charges import Charge
from cluster.store.payments import ChannelAccount, channel_account
from cluster.store.pool import create_pool
from cluster.store.writer import PostgresBatchSaver, SaveOutcome, SaveRequest

CAPACITY = 100


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    pool = create_pool(DatabaseSettings(url=database_url, pool_min=1, pool_max=4), name="charges")
    await pool.open()
    try:
        yield pool
    finally:
        await pool.close()


def charge(channel: str, nonce: int, amount: int) -> Charge:
    return Charge(channel, nonce, amount, "XRP", "ab" * 33, CAPACITY, 2_000_000_000, "OPEN")


def paid(event: Event, payment: Charge | None) -> SaveRequest:
    return SaveRequest(event, encode_event(event).decode(), payment)


async def stored(database_url: str, event: Event) -> bool:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM events WHERE id = %s", (bytes.fromhex(event.id),)
        )
        return await cursor.fetchone() == (1,)


async def outbox_nonces(database_url: str, channel: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cursor = await conn.execute(
            "SELECT nonce FROM payment_outbox WHERE channel_id = %s ORDER BY nonce", (channel,)
        )
        return [row[0] for row in await cursor.fetchall()]


async def test_nonces_and_capacity_decide_in_the_batch(
    pool: AsyncConnectionPool, database_url: str
) -> None:
    channel = secrets.token_hex(8)
    signer = Signer()
    events = [signer.sign(1, f"paid {i}") for i in range(5)]
    outcomes = await PostgresBatchSaver(pool).save_many(
        [
            paid(events[0], charge(channel, 1, 40)),
            paid(events[1], charge(channel, 1, 40)),  # the same nonce again
            paid(events[2], charge(channel, 3, 40)),  # a gap is fine: nonces only increase
            paid(events[3], charge(channel, 2, 10)),  # lower than the highest accepted
            paid(events[4], charge(channel, 4, 30)),  # 40 + 40 + 30 > capacity
        ]
    )
    assert outcomes == [
        SaveOutcome.STORED,
        SaveOutcome.STALE_NONCE,
        SaveOutcome.STORED,
        SaveOutcome.STALE_NONCE,
        SaveOutcome.INSUFFICIENT_BALANCE,
    ]
    assert [await stored(database_url, event) for event in events] == [
        True,
        False,
        True,
        False,
        False,
    ]
    assert await channel_account(pool, channel) == ChannelAccount(channel, CAPACITY, 80, 3, 2)
    assert await outbox_nonces(database_url, channel) == [1, 3]


async def test_events_that_are_not_stored_are_never_charged(pool: AsyncConnectionPool) -> None:
    channel = secrets.token_hex(8)
    signer = Signer()
    note = signer.sign(1, "once")
    newer = signer.sign(0, '{"name":"new"}', created_at=1_700_000_100)
    older = signer.sign(0, '{"name":"old"}', created_at=1_700_000_000)
    saver = PostgresBatchSaver(pool)
    assert await saver.save_many([paid(note, charge(channel, 1, 5)), paid(newer, None)]) == [
        SaveOutcome.STORED,
        SaveOutcome.STORED,
    ]
    doomed = signer.sign(1, "deleted before it arrives")
    deletion = signer.sign(5, "", [["e", doomed.id]])
    assert await saver.save_many([paid(deletion, None)]) == [SaveOutcome.STORED]
    outcomes = await saver.save_many(
        [
            paid(note, charge(channel, 2, 5)),
            paid(older, charge(channel, 3, 5)),
            paid(doomed, charge(channel, 4, 5)),
        ]
    )
    assert outcomes == [SaveOutcome.DUPLICATE, SaveOutcome.SUPERSEDED, SaveOutcome.DELETED]
    assert await channel_account(pool, channel) == ChannelAccount(channel, CAPACITY, 5, 1, 1)
