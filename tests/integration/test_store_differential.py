"""EventStore against a naive Python reference on the same data (real PostgreSQL).

The reference keeps the newest version of each replaceable/addressable address (ties: lowest
id), drops expired events (NIP-40), applies `Filter.matches`, sorts each filter's matches by
(created_at desc, id asc), cuts them to the filter's limit, and unions. The database is shared
with the rest of the session, so every filter is scoped to this module's authors, ids or a
run-unique `z` tag.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import AsyncIterator, Iterable
from typing import Any

import msgspec
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from cluster.config import DatabaseSettings
from cluster.nostr.event import Event, encode_event
from cluster.nostr.filters import Filter, FilterLimits, parse_filter
from cluster.nostr.signing import Signer
from cluster.store.events import EventStore
from cluster.store.pool import create_pool
from cluster.store.writer import PostgresBatchSaver, SaveOutcome, SaveRequest

LIMITS = FilterLimits(max_limit=40, default_limit=25, max_values=20)
BASE = 1_600_000_000  # created_at of the random events: BASE .. BASE + 30 (many ties)
NOW = BASE + 100  # the `now` every query runs at
KINDS = [1, 1, 1, 1, 7, 7, 0, 10002, 30023, 30023, 30023]
LETTERS = ["e", "p", "t"]
VALUES = ["v0", "v1", "v2", "v3", "v4"]
D_VALUES = ["", "a", "b", "c"]


@pytest.fixture(scope="module")
async def store(database_url: str) -> AsyncIterator[EventStore]:
    pool = create_pool(DatabaseSettings(url=database_url, pool_min=1, pool_max=8), name="diff")
    await pool.open()
    try:
        yield EventStore(pool)
    finally:
        await pool.close()


def raw_of(event: Event) -> str:
    return encode_event(event).decode()


def requests(events: Iterable[Event]) -> list[SaveRequest]:
    return [SaveRequest(event, raw_of(event)) for event in events]


def ids_of(rows: Iterable[bytes]) -> list[str]:
    return [msgspec.json.decode(row)["id"] for row in rows]


# ---- the naive reference ---------------------------------------------------------------------


def sort_key(event: Event) -> tuple[int, str]:
    return (-event.created_at, event.id)


def live_versions(events: Iterable[Event]) -> list[Event]:
    """What must be stored: every regular event, and the newest version of each address."""
    regular: list[Event] = []
    newest: dict[str, Event] = {}
    for event in events:
        address = event.address
        if address is None:
            regular.append(event)
        elif address not in newest or sort_key(event) < sort_key(newest[address]):
            newest[address] = event
    return regular + list(newest.values())


def reference_query(stored: list[Event], filters: list[Filter], now: int) -> list[str]:
    visible = [e for e in stored if e.expiration is None or e.expiration > now]
    chosen: dict[str, Event] = {}
    for flt in filters:
        matched = sorted((e for e in visible if flt.matches(e)), key=sort_key)
        for event in matched[: flt.limit]:
            chosen[event.id] = event
    return [e.id for e in sorted(chosen.values(), key=sort_key)]


def reference_count(stored: list[Event], filters: list[Filter], now: int) -> int:
    visible = [e for e in stored if e.expiration is None or e.expiration > now]
    return sum(1 for e in visible if any(f.matches(e) for f in filters))


# ---- random data -----------------------------------------------------------------------------


def random_events(rng: random.Random, signers: list[Signer], token: str) -> list[Event]:
    events = []
    for i in range(400):
        kind = rng.choice(KINDS)
        tags: list[list[str]] = [["z", token]]
        for _ in range(rng.randint(0, 3)):
            tag = [rng.choice(LETTERS), rng.choice(VALUES)]
            if rng.random() < 0.15:
                tag.append(rng.choice(VALUES))  # index 2 is not matched by filters
            tags.append(tag)
        if rng.random() < 0.05:
            tags.append(["tt", rng.choice(VALUES)])  # not a single-letter tag
        if kind == 30023 and rng.random() < 0.9:
            tags.append(["d", rng.choice(D_VALUES)])
        roll = rng.random()
        if roll < 0.04:
            tags.append(["expiration", str(NOW - rng.randint(1, 50))])
        elif roll < 0.06:
            tags.append(["expiration", str(NOW)])  # expires exactly now: not served
        elif roll < 0.10:
            tags.append(["expiration", str(NOW + rng.randint(1, 1000))])
        rng.shuffle(tags)
        created_at = BASE + rng.randint(0, 30)
        events.append(rng.choice(signers).sign(kind, f"n{i}", tags, created_at=created_at))
    return events


def random_filter(
    rng: random.Random, events: list[Event], authors: list[str], token: str
) -> dict[str, Any]:
    raw: dict[str, Any] = {}

    def pick(pool: list[Any], most: int) -> list[Any]:
        if rng.random() < 0.03:
            return []
        return rng.sample(pool, rng.randint(1, min(most, len(pool))))

    if rng.random() < 0.1:
        raw["ids"] = pick([e.id for e in events], 15) + (
            [secrets.token_hex(32)] if rng.random() < 0.3 else []
        )
    if rng.random() < 0.35:
        raw["authors"] = pick(authors, 3)
    if rng.random() < 0.5:
        raw["kinds"] = pick([0, 1, 7, 10002, 30023, 4], 3)
    for letter in LETTERS:
        if rng.random() < 0.2:
            raw[f"#{letter}"] = pick(VALUES, 3)
    if rng.random() < 0.08:
        raw["#d"] = pick(D_VALUES, 2)
    if rng.random() < 0.3:
        raw["since"] = BASE + rng.randint(-2, 32)
    if rng.random() < 0.3:
        raw["until"] = BASE + rng.randint(-2, 32)
    if rng.random() < 0.7:
        raw["limit"] = rng.choice([0, 1, 2, 3, 5, 10, 1000])
    if "ids" not in raw and "authors" not in raw:
        # keep other tests' events out of the results
        raw["#z"] = [token] if rng.random() < 0.8 else [token, "someone-else"]
    return raw


# ---- the differential test -------------------------------------------------------------------


async def test_query_and_count_equal_the_naive_reference(store: EventStore) -> None:
    rng = random.Random(20240601)
    token = secrets.token_hex(8)
    signers = [Signer() for _ in range(6)]
    authors = [s.pubkey for s in signers]
    events = random_events(rng, signers, token)

    outcomes: list[SaveOutcome] = []
    for start in range(0, len(events), 100):
        outcomes += await store.save_many(requests(events[start : start + 100]))
    stored = live_versions(events)
    stored_ids = {e.id for e in stored}
    for event, outcome in zip(events, outcomes, strict=True):
        if event.address is None:
            assert outcome is SaveOutcome.STORED, event
        else:
            assert outcome in (SaveOutcome.STORED, SaveOutcome.SUPERSEDED), event
        if event.id in stored_ids:
            assert outcome is SaveOutcome.STORED, event
    # The data has the shapes the test is about.
    assert len(stored) < len(events)
    assert sum(1 for e in stored if e.expiration is not None) >= 5
    assert len({e.created_at for e in events}) < len(events) // 5

    # Everything scoped to this run, no limits: the exact stored set.
    everything = parse_filter({"#z": [token], "limit": 1000}, FilterLimits(max_limit=1000))
    assert ids_of(await store.query([everything], NOW)) == reference_query(
        stored, [everything], NOW
    )
    assert await store.count([everything], NOW) == reference_count(stored, [everything], NOW)
    # ... and at a `now` before any expiry, expiring events are served too.
    assert await store.count([everything], BASE) == len(stored)

    checked_nonempty = 0
    for round_ in range(300):
        raws = [random_filter(rng, events, authors, token) for _ in range(rng.choice([1, 1, 2, 3]))]
        filters = [parse_filter(raw, LIMITS) for raw in raws]
        expected = reference_query(stored, filters, NOW)
        got = ids_of(await store.query(filters, NOW))
        assert got == expected, (round_, raws)
        assert await store.count(filters, NOW) == reference_count(stored, filters, NOW), (
            round_,
            raws,
        )
        checked_nonempty += bool(expected)
    assert checked_nonempty > 150


# ---- concurrent replacement ------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "tags"), [(0, []), (30023, [["d", "race"]])])
@pytest.mark.parametrize("round_", range(3))
async def test_concurrent_versions_of_one_address_keep_the_newest(
    store: EventStore, kind: int, tags: list[list[str]], round_: int
) -> None:
    rng = random.Random(round_ * 31 + kind)
    signer = Signer()
    top = BASE + 50
    versions = [signer.sign(kind, f"v{i}", tags, created_at=BASE + i) for i in range(18)]
    tied = [signer.sign(kind, f"tie{i}", tags, created_at=top) for i in range(2)]
    versions += tied
    winner = min(tied, key=lambda e: e.id)

    rng.shuffle(versions)
    batches: list[list[Event]] = [[], [], []]
    for i, event in enumerate(v for v in versions if v not in tied):
        batches[i % 3].append(event)
    batches[0].append(tied[0])
    batches[1 + round_ % 2].insert(rng.randint(0, 3), tied[1])
    results = await asyncio.gather(*(store.save_many(requests(batch)) for batch in batches))

    outcome_of = {
        e.id: outcome
        for batch, outcomes in zip(batches, results, strict=True)
        for e, outcome in zip(batch, outcomes, strict=True)
    }
    assert outcome_of[winner.id] is SaveOutcome.STORED
    assert set(outcome_of.values()) <= {SaveOutcome.STORED, SaveOutcome.SUPERSEDED}
    mine = parse_filter({"authors": [signer.pubkey]}, LIMITS)
    assert ids_of(await store.query([mine], NOW)) == [winner.id]
    assert await store.count([mine], NOW) == 1

    # Any version saved afterwards, the losing tie included, is superseded.
    loser = max(tied, key=lambda e: e.id)
    again = await store.save_many(requests([loser, versions[0]]))
    assert again[0] is SaveOutcome.SUPERSEDED
    assert again[1] in (SaveOutcome.SUPERSEDED, SaveOutcome.DUPLICATE)
    assert ids_of(await store.query([mine], NOW)) == [winner.id]


# ---- NIP-09 deletion -------------------------------------------------------------------------


async def test_deletion_removes_only_the_authors_own_events(store: EventStore) -> None:
    alice, bob = Signer(), Signer()
    t = BASE + 10
    a_note1 = alice.sign(1, "a1", created_at=t)
    a_note2 = alice.sign(1, "a2", created_at=t)
    a_article = alice.sign(30023, "a-art", [["d", "x"]], created_at=t)
    a_other_article = alice.sign(30023, "a-art-y", [["d", "y"]], created_at=t)
    b_note = bob.sign(1, "b1", created_at=t)
    b_article = bob.sign(30023, "b-art", [["d", "x"]], created_at=t)
    b_future = bob.sign(1, "b-later", created_at=t + 1)  # not stored yet
    batch = [a_note1, a_note2, a_article, a_other_article, b_note, b_article]
    assert await store.save_many(requests(batch)) == [SaveOutcome.STORED] * 6

    deletion = alice.sign(
        5,
        "",
        [
            ["e", a_note1.id],
            ["e", b_note.id],
            ["e", b_future.id],
            ["a", f"30023:{alice.pubkey}:x"],
            ["a", f"30023:{bob.pubkey}:x"],
        ],
        created_at=t + 5,
    )
    assert await store.save_many(requests([deletion])) == [SaveOutcome.STORED]

    both = parse_filter({"authors": [alice.pubkey, bob.pubkey]}, LIMITS)
    remaining = set(ids_of(await store.query([both], NOW)))
    assert remaining == {a_note2.id, a_other_article.id, b_note.id, b_article.id, deletion.id}
    assert await store.count([both], NOW) == 5

    outcomes = await store.save_many(
        requests(
            [
                a_note1,  # deleted id: cannot come back
                a_article,  # deleted address, same created_at
                b_future,  # alice cannot delete bob's events, even ahead
                b_note,  # still stored
            ]
        )
    )
    assert outcomes == [
        SaveOutcome.DELETED,
        SaveOutcome.DELETED,
        SaveOutcome.STORED,
        SaveOutcome.DUPLICATE,
    ]
    older = alice.sign(30023, "a-art-old", [["d", "x"]], created_at=t + 5)
    newer = alice.sign(30023, "a-art-new", [["d", "x"]], created_at=t + 6)
    assert await store.save_many(requests([older, newer])) == [
        SaveOutcome.DELETED,
        SaveOutcome.STORED,
    ]
    articles = parse_filter({"authors": [alice.pubkey], "kinds": [30023]}, LIMITS)
    assert set(ids_of(await store.query([articles], NOW))) == {newer.id, a_other_article.id}


# ---- the tag index follows every way an event leaves ----------------------------------------


async def tag_rows(store: EventStore, event: Event) -> list[str]:
    async with store.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT tagvalue FROM event_tags WHERE event_id = %s ORDER BY tagvalue",
            (bytes.fromhex(event.id),),
        )
        return [row[0] for row in await cursor.fetchall()]


async def test_tag_rows_follow_store_replace_delete_and_purge(store: EventStore) -> None:
    author = Signer()
    token = secrets.token_hex(8)
    t = BASE + 20
    # A repeated tag is one row; multi-letter tags are not indexed (NIP-01).
    note = author.sign(1, "n", [["t", token], ["t", token], ["p", token], ["tt", token]], t)
    old = author.sign(30023, "old", [["d", token], ["t", token]], created_at=t)
    expiring = author.sign(1, "x", [["t", token], ["expiration", str(NOW - 1)]], t)
    assert await store.save_many(requests([note, old, expiring])) == [SaveOutcome.STORED] * 3
    assert await tag_rows(store, note) == [f"p:{token}", f"t:{token}"]
    assert await tag_rows(store, old) == [f"d:{token}", f"t:{token}"]

    new = author.sign(30023, "new", [["d", token]], created_at=t + 1)
    deletion = author.sign(5, "", [["e", note.id]], created_at=t + 2)
    assert await store.save_many(requests([new, deletion])) == [SaveOutcome.STORED] * 2
    assert await tag_rows(store, old) == []  # replaced
    assert await tag_rows(store, note) == []  # deleted (NIP-09)
    assert await tag_rows(store, expiring) == [f"t:{token}"]
    assert await store.purge_expired(NOW) >= 1
    assert await tag_rows(store, expiring) == []  # purged (NIP-40)

    by_tag = parse_filter({"#t": [token, "unused"]}, LIMITS)
    assert ids_of(await store.query([by_tag], NOW)) == []
    assert await store.count([by_tag], NOW) == 0
    by_d = parse_filter({"#d": [token]}, LIMITS)
    assert ids_of(await store.query([by_d], NOW)) == [new.id]
    assert await store.count([by_d], NOW) == 1


async def test_saving_needs_autocommit_so_an_acknowledged_batch_is_committed(
    database_url: str,
) -> None:
    """The batch save sends no COMMIT: on a connection inside a transaction it must refuse."""
    pool = AsyncConnectionPool(database_url, min_size=1, max_size=1, open=False)
    await pool.open()
    event = Signer().sign(1, "never acknowledged")
    try:
        with pytest.raises(RuntimeError, match="autocommit"):
            await PostgresBatchSaver(pool).save_many(requests([event]))
    finally:
        await pool.close()
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM events WHERE id = %s", (bytes.fromhex(event.id),)
        )
        assert await cursor.fetchone() == (0,)
