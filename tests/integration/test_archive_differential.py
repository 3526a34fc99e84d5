"""The archive tier changes no answer: REQ, COUNT and NIP-77 item lists before and after a run.

Random events spread over 70 days (kinds 1 and 7 archived after 20 and 10 days), random
filters whose `since` falls on both sides of the horizons; the same filters answered before the
archive moves anything and after it moved every old event, in-process (EventStore, fetch_items)
and through a real relay configured with the same horizons. A fresh database, so the archive
moves this test's events only.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from psycopg_pool import AsyncConnectionPool

from cluster.config import DatabaseSettings
from cluster.nostr.event import Event, encode_event
from cluster.nostr.filters import Filter, FilterLimits, parse_filter
from cluster.nostr.signing import Signer
from cluster.store.archive import archive_now, archive_scope
from cluster.store.events import EventStore
from cluster.store.items import fetch_items
from cluster.store.pool import create_pool
from cluster.store.writer import SaveRequest
from tests.client import connect
from tests.services import RelayStarter, migrated_database

DAY = 86_400
HORIZONS = {1: 20 * DAY, 7: 10 * DAY}
NOW = int(time.time())
LIMITS = FilterLimits(max_limit=100, default_limit=50, max_values=20)
KINDS = [1, 1, 1, 7, 7, 7, 0, 30023, 5000]
VALUES = ["v0", "v1", "v2", "v3"]


@pytest.fixture(scope="module")
async def archive_db(postgres_server_url: str) -> AsyncIterator[str]:
    async with migrated_database(postgres_server_url, "archive_diff") as url:
        yield url


@pytest.fixture(scope="module")
async def pool(archive_db: str) -> AsyncIterator[AsyncConnectionPool]:
    pool = create_pool(DatabaseSettings(url=archive_db, pool_min=1, pool_max=4), name="archive")
    await pool.open()
    try:
        yield pool
    finally:
        await pool.close()


def random_events(rng: random.Random, signers: list[Signer]) -> list[Event]:
    events = []
    for i in range(500):
        kind = rng.choice(KINDS)
        tags = [[rng.choice("ept"), rng.choice(VALUES)] for _ in range(rng.randint(0, 2))]
        if kind == 30023:
            tags.append(["d", rng.choice(["a", "b"])])
        if rng.random() < 0.05:
            tags.append(["expiration", str(NOW + rng.choice([-DAY, DAY]))])
        # many ties on created_at, on both sides of each horizon
        created_at = NOW - rng.randint(0, 70) * DAY + rng.randint(0, 3)
        events.append(rng.choice(signers).sign(kind, f"n{i}", tags, created_at=created_at))
    return events


def random_filter(rng: random.Random, events: list[Event], authors: list[str]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    if rng.random() < 0.1:
        raw["ids"] = [e.id for e in rng.sample(events, rng.randint(1, 8))]
    if rng.random() < 0.4:
        raw["authors"] = rng.sample(authors, rng.randint(1, 3))
    if rng.random() < 0.6:
        raw["kinds"] = rng.sample([0, 1, 7, 30023, 5000], rng.randint(1, 3))
    if rng.random() < 0.3:
        raw[f"#{rng.choice('ept')}"] = rng.sample(VALUES, rng.randint(1, 2))
    if rng.random() < 0.6:
        raw["since"] = NOW - rng.randint(0, 72) * DAY
    if rng.random() < 0.3:
        raw["until"] = NOW - rng.randint(0, 72) * DAY
    raw["limit"] = rng.choice([1, 3, 10, 50, 100])
    return raw


def ids_of(rows: list[bytes]) -> list[str]:
    return [msgspec.json.decode(row)["id"] for row in rows]


async def answers(
    store: EventStore, pool: AsyncConnectionPool, filters: list[list[Filter]]
) -> list[tuple[Any, ...]]:
    scope = store.archive
    out = []
    for group in filters:
        rows = ids_of(await store.query(group, NOW))
        counted = await store.count_answer(group, NOW)
        items = await fetch_items(pool, group[0], NOW, frozenset(), 10_000, archive=scope)
        out.append((rows, counted.count, counted.hll, items.count, items.ids))
    return out


async def relay_answers(url: str, raws: list[list[dict[str, Any]]]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    async with connect(url) as client:
        for i, group in enumerate(raws):
            events = await client.query(f"q{i}", *group)
            await client.send(["COUNT", f"c{i}", *group])
            _, counted = await client.receive_until(lambda m: m[0] in ("COUNT", "CLOSED"))
            out.append(([e["id"] for e in events], counted))
    return out


async def test_answers_are_the_same_before_and_after_archiving(
    archive_db: str, pool: AsyncConnectionPool, start_relay: RelayStarter
) -> None:
    rng = random.Random(15)
    signers = [Signer() for _ in range(5)]
    authors = [s.pubkey for s in signers]
    events = random_events(rng, signers)
    plain = EventStore(pool)
    tiered = EventStore(pool, archive_scope(HORIZONS))
    await plain.save_many([SaveRequest(e, encode_event(e).decode()) for e in events])

    raws = [
        [random_filter(rng, events, authors) for _ in range(rng.choice([1, 1, 2]))]
        for _ in range(200)
    ]
    groups = [[parse_filter(raw, LIMITS) for raw in group] for group in raws]
    relay = start_relay.start(
        workers=1,
        DATABASE_URL=archive_db,
        RELAY_ARCHIVE__HORIZONS=msgspec.json.encode(
            {str(k): v for k, v in HORIZONS.items()}
        ).decode(),
        RELAY_ARCHIVE__SCHEDULE="false",
    )
    by_relay = raws[:40]
    before = await answers(plain, pool, groups)
    relay_before = await relay_answers(relay.url, by_relay)

    async with pool.connection() as conn:
        moved = await archive_now(conn, HORIZONS, batch=37, now=NOW)
        cursor = await conn.execute("SELECT count(*) FROM archived_events")
        archived = (await cursor.fetchone() or [0])[0]
        cursor = await conn.execute("SELECT count(*) FROM archived_event_tags")
        archived_tags = (await cursor.fetchone() or [0])[0]
    old = [e for e in events if e.kind in HORIZONS and e.created_at < NOW - HORIZONS[e.kind]]
    assert sum(moved.values()) == archived == len(old) > 100  # batches of 37: many of them
    assert archived_tags > 0

    after = await answers(tiered, pool, groups)
    reaching = 0
    for i, (was, now) in enumerate(zip(before, after, strict=True)):
        assert now == was, (i, raws[i])
        reaching += any(tiered.archive and tiered.archive.reaches(f, NOW) for f in groups[i])
    assert reaching > 60
    assert sum(hll is not None for _, _, hll, *_ in after) > 5  # NIP-45 registers, both tiers
    assert sum(bool(rows) for rows, *_ in before) > 100
    # The store without the archive's scope no longer sees the archived events: the union is
    # what keeps the answers.
    assert await answers(plain, pool, groups) != before
    assert await relay_answers(relay.url, by_relay) == relay_before


async def test_the_schedule_moves_once_with_two_workers(
    postgres_server_url: str, start_relay: RelayStarter
) -> None:
    """Both workers try every interval; one round moves everything, nobody moves it twice."""
    signer = Signer()
    old = [signer.sign(7, "+", created_at=NOW - 40 * DAY - i) for i in range(300)]
    async with migrated_database(postgres_server_url, "archive_schedule") as url:
        pool = create_pool(DatabaseSettings(url=url, pool_min=1, pool_max=2), name="schedule")
        await pool.open()
        try:
            await EventStore(pool).save_many(
                [SaveRequest(e, encode_event(e).decode()) for e in old]
            )
            relay = start_relay.start(
                workers=2,
                DATABASE_URL=url,
                RELAY_ARCHIVE__HORIZONS='{"7": 864000}',
                RELAY_ARCHIVE__INTERVAL="0.3",
            )
            assert len(relay.worker_pids()) == 2
            archived = 0
            for _ in range(100):
                async with pool.connection() as conn:
                    cursor = await conn.execute("SELECT count(*) FROM archived_events")
                    archived = (await cursor.fetchone() or [0])[0]
                if archived == len(old):
                    break
                await asyncio.sleep(0.1)
            assert archived == len(old)
            await asyncio.sleep(1.0)  # more rounds, on both workers: nothing left to move
            moves = [line for line in relay.log_tail(400).splitlines() if "archived " in line]
            assert len(moves) == 1 and "archived 300 events" in moves[0], moves
        finally:
            await pool.close()
