"""A batch saves exactly as its events saved one by one, in order (real PostgreSQL).

relay_save_events saves plain events (regular kinds, unpaid) set-based and the rest one by one;
this test generates random batches that mix every case (fresh, repeated in the batch, already
stored, deleted earlier, replaceable and addressable versions, paid, NIP-09 deletions inside the
batch) and compares each batch's outcomes and the resulting table with a reference database
where every event went through relay_save_event alone, in the same order.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator, Sequence

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from cluster.config import DatabaseSettings
from cluster.nostr.event import Event, encode_event
from cluster.nostr.signing import Signer
from cluster.store.charges import Charge
from cluster.store.pool import create_pool
from cluster.store.writer import PostgresBatchSaver, SaveRequest, save_row
from tests.services import migrated_database

ROUNDS = 12
SINGLE_SQL = "SELECT relay_save_event(" + ", ".join(["%s"] * 18) + ")"


@pytest.fixture(scope="module")
async def databases(postgres_server_url: str) -> AsyncIterator[tuple[str, str]]:
    async with (
        migrated_database(postgres_server_url, "batches") as batch_url,
        migrated_database(postgres_server_url, "reference") as reference_url,
    ):
        yield batch_url, reference_url


@pytest.fixture(scope="module")
async def pool(databases: tuple[str, str]) -> AsyncIterator[AsyncConnectionPool]:
    pool = create_pool(DatabaseSettings(url=databases[0], pool_min=1, pool_max=2), name="batch")
    await pool.open()
    try:
        yield pool
    finally:
        await pool.close()


def single_parameters(requests: Sequence[SaveRequest]) -> Iterator[tuple[object, ...]]:
    """relay_save_event's arguments for each event of a batch, in order."""
    for row in map(save_row, requests):
        yield (
            bytes.fromhex(row.id),
            bytes.fromhex(row.pubkey),
            row.created_at,
            row.kind,
            row.address,
            row.expires_at,
            row.tagvalues,
            row.raw,
            row.delete_ids,
            row.delete_addresses,
            row.channel,
            row.nonce,
            row.amount,
            row.blockchain,
            row.sender_pubkey,
            row.capacity,
            row.expiration,
            row.status,
        )


async def save_one_by_one(url: str, requests: Sequence[SaveRequest]) -> list[str]:
    outcomes = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for parameters in single_parameters(requests):
            cursor = await conn.execute(SINGLE_SQL, parameters)
            row = await cursor.fetchone()
            assert row is not None
            outcomes.append(row[0])
    return outcomes


async def table(url: str) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(
            "SELECT encode(id, 'hex'), kind, address, tagvalues, raw FROM events ORDER BY id"
        )
        events = await cursor.fetchall()
        cursor = await conn.execute(
            "SELECT tagvalue, encode(event_id, 'hex') FROM event_tags ORDER BY 1, 2"
        )
        tags = await cursor.fetchall()
        cursor = await conn.execute("SELECT target, deleted_at FROM deletions ORDER BY 1")
        tombstones = await cursor.fetchall()
        cursor = await conn.execute(
            "SELECT channel_id, spent, highest_nonce FROM payment_channels ORDER BY 1"
        )
        channels = await cursor.fetchall()
    return [*events, ("tags", *tags), ("deletions", *tombstones), ("channels", *channels)]


class Scenario:
    """Random events that hit every branch of the save rules."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.signers = [Signer() for _ in range(3)]
        self.history: list[Event] = []
        self.nonce = 0
        self.clock = 1_700_000_000

    def request(self, event: Event, charge: Charge | None = None) -> SaveRequest:
        self.history.append(event)
        return SaveRequest(event, encode_event(event).decode(), charge)

    def next_request(self) -> SaveRequest:
        rng = self.rng
        signer = rng.choice(self.signers)
        self.clock += rng.choice([0, 1, 1, 2])
        roll = rng.random()
        if roll < 0.15 and self.history:  # the same event again: in this batch or an earlier one
            event = rng.choice(self.history[-20:])
            return SaveRequest(event, encode_event(event).decode())
        if roll < 0.25:  # a replaceable or addressable version
            kind = rng.choice([0, 3, 10002, 30023])
            tags = [["d", rng.choice("ab")]] if kind >= 30000 else []
            return self.request(signer.sign(kind, f"v{roll}", tags, created_at=self.clock))
        if roll < 0.32 and self.history:  # a NIP-09 deletion of one of the author's events
            own = [e for e in self.history if e.pubkey == signer.pubkey and e.kind != 5]
            if own:
                target = rng.choice(own)
                tags = [["e", target.id]]
                if target.address is not None:
                    tags.append(["a", target.address])
                return self.request(signer.sign(5, "", tags, created_at=self.clock + 5))
        if roll < 0.40:  # paid: nonces mostly increase, sometimes repeat
            self.nonce += rng.choice([1, 1, 0])
            event = signer.sign(1, f"paid {roll}", created_at=self.clock)
            charge = Charge("chan", self.nonce, 3, "XRP", "ab" * 33, 60, 2_000_000_000, "OPEN")
            return self.request(event, charge)
        tags = [["t", rng.choice(["x", "y", "z"])], ["p", rng.choice(self.signers).pubkey]]
        return self.request(signer.sign(1, f"note {roll}", tags[: rng.randint(0, 2)]))


@pytest.mark.parametrize("seed", range(3))
async def test_batches_save_like_their_events_one_by_one(
    seed: int, pool: AsyncConnectionPool, databases: tuple[str, str]
) -> None:
    batch_url, reference_url = databases
    async with await psycopg.AsyncConnection.connect(batch_url, autocommit=True) as conn:
        await conn.execute(
            "TRUNCATE events, deletions, payment_channels, payment_claims, payment_outbox"
        )
    async with await psycopg.AsyncConnection.connect(reference_url, autocommit=True) as conn:
        await conn.execute(
            "TRUNCATE events, deletions, payment_channels, payment_claims, payment_outbox"
        )
    rng = random.Random(seed)
    scenario = Scenario(rng)
    saver = PostgresBatchSaver(pool)
    seen_plain_batch = False
    for _ in range(ROUNDS):
        batch = [scenario.next_request() for _ in range(rng.randint(1, 30))]
        seen_plain_batch |= all(r.event.kind != 5 for r in batch) and len(batch) >= 4
        outcomes = [str(outcome) for outcome in await saver.save_many(batch)]
        expected = await save_one_by_one(reference_url, batch)
        assert outcomes == expected, [
            (r.event.kind, r.event.id[:6], r.payment is not None) for r in batch
        ]
    assert seen_plain_batch  # the set-based path really ran
    assert await table(batch_url) == await table(reference_url)


async def test_a_plain_batch_with_repeats_stores_each_event_once(
    pool: AsyncConnectionPool, databases: tuple[str, str]
) -> None:
    signer = Signer()
    first, second = signer.sign(1, "one"), signer.sign(1, "two")
    requests = [SaveRequest(e, encode_event(e).decode()) for e in (first, second, first, first)]
    outcomes = await PostgresBatchSaver(pool).save_many(requests)
    assert [str(o) for o in outcomes] == ["stored", "stored", "duplicate", "duplicate"]
    again = await PostgresBatchSaver(pool).save_many(requests[:2])
    assert [str(o) for o in again] == ["duplicate", "duplicate"]


async def test_events_of_a_vanished_author_are_refused_by_both_paths(
    pool: AsyncConnectionPool, databases: tuple[str, str]
) -> None:
    """NIP-62 (functions/035_vanish.sql): the set-based and the one-by-one save refuse alike."""
    author, other = Signer(), Signer()
    request = author.sign(62, "", tags=[["relay", "ALL_RELAYS"]], created_at=2_000_000_000)
    old = [author.sign(1, f"old {i}", created_at=1_900_000_000 + i) for i in range(3)]
    old.append(author.sign(30023, "addressable", tags=[["d", "x"]], created_at=1_900_000_000))
    newer = author.sign(1, "after", created_at=2_000_000_001)
    unrelated = other.sign(1, "someone else", created_at=1_900_000_000)
    batch = [SaveRequest(e, encode_event(e).decode()) for e in (*old, newer, unrelated)]
    expected = ["vanished"] * 4 + ["stored", "stored"]
    for url in databases:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            before = SaveRequest(old[0], encode_event(old[0]).decode())
            await conn.execute(SINGLE_SQL, next(single_parameters([before])))
            cursor = await conn.execute(
                "SELECT relay_vanish(%s, %s, %s, %s)",
                (bytes.fromhex(author.pubkey), request.created_at, bytes.fromhex(request.id), "{}"),
            )
            assert await cursor.fetchone() == (1,)  # the one stored before
    assert [str(o) for o in await PostgresBatchSaver(pool).save_many(batch)] == expected
    assert await save_one_by_one(databases[1], batch) == expected
