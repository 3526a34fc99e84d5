"""NIP-50 search through a real relay: matching combined with other fields, relevance order,
limits, ignored extensions, live events, COUNT; the stored documents: built for events stored
before search was enabled, resumed, recomputed for another text search configuration."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import psycopg
import pytest

from cluster.nostr.event import encode_event
from cluster.nostr.signing import Signer
from cluster.store.search import (
    INDEX_NAME,
    SearchState,
    ensure_search_documents,
    search_state,
    stop_search_documents,
)
from tests.client import connect
from tests.services import RelayProcess, RelayStarter, migrated_database


@pytest.fixture(scope="module")
async def search_relay(
    relay_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, database_url: str
) -> AsyncIterator[RelayProcess]:
    """A relay with search.enabled on the session database, once its index is built."""
    starter = RelayStarter(relay_env, tmp_path_factory.mktemp("search"))
    relay = starter.start(workers=2, RELAY_SEARCH__ENABLED="true")
    try:
        # autocommit: an open transaction would hold CREATE INDEX CONCURRENTLY back
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await wait_until_ready(conn, "simple")
        yield relay
    finally:
        starter.stop_all()


async def wait_until_ready(conn: psycopg.AsyncConnection[Any], config: str) -> None:
    for _ in range(400):
        if await search_state(conn) == SearchState(config, True):
            return
        await asyncio.sleep(0.05)
    assert await search_state(conn) == SearchState(config, True), "no search documents"


def word() -> str:
    """A word no other test's event contains (the session database is shared)."""
    return "zq" + os.urandom(5).hex()


async def test_search_with_kinds_and_authors(search_relay: RelayProcess) -> None:
    alice, bob = Signer(), Signer()
    w = word()
    now = int(time.time())
    mine = alice.sign(1, f"Talking about {w.upper()} today", created_at=now - 5)
    events = [
        mine,
        alice.sign(1, "nothing to see here", created_at=now - 4),
        alice.sign(30023, f"an article on {w}", [["d", w]], created_at=now - 3),
        bob.sign(1, f"{w} from bob", created_at=now - 2),
        alice.sign(7, w, created_at=now - 1),  # a reaction: not a searchable kind
    ]
    async with connect(search_relay.url) as client:
        for event in events:
            assert (await client.publish(event))[2] is True
        found = await client.query("s", {"kinds": [1], "authors": [alice.pubkey], "search": w})
        assert [e["id"] for e in found] == [mine.id]
        anyone = await client.query("s2", {"search": w})
        assert {e["id"] for e in anyone} == {events[0].id, events[2].id, events[3].id}
        # Unknown extensions are ignored (NIP-50); a search of extensions only is no search.
        same = await client.query("s3", {"search": f"{w} language:en include:spam"})
        assert {e["id"] for e in same} == {e["id"] for e in anyone}
        plain = await client.query("s4", {"authors": [alice.pubkey], "search": "language:en"})
        assert len(plain) == 4  # every event of alice's, the reaction too
        await client.send(["COUNT", "c", {"search": w}])
        assert await client.receive() == ["COUNT", "c", {"count": 3}]
        two_words = await client.query("s5", {"search": f"{w} bob"})
        assert [e["id"] for e in two_words] == [events[3].id]


async def test_results_come_by_relevance_then_recency_and_limit_applies_after(
    search_relay: RelayProcess,
) -> None:
    signer = Signer()
    w = word()
    now = int(time.time())
    once_old = signer.sign(1, f"{w} mentioned once, a while ago", created_at=now - 30)
    thrice = signer.sign(1, f"{w} {w} and {w} again", created_at=now - 20)
    once_new = signer.sign(1, f"{w} once more", created_at=now - 10)
    async with connect(search_relay.url) as client:
        for event in (once_old, thrice, once_new):
            assert (await client.publish(event))[2] is True
        ranked = await client.query("r", {"search": w})
        assert [e["id"] for e in ranked] == [thrice.id, once_new.id, once_old.id]
        top = await client.query("r2", {"search": w, "limit": 2})
        assert [e["id"] for e in top] == [thrice.id, once_new.id]


async def test_bad_search_is_closed_invalid_and_the_connection_lives(
    search_relay: RelayProcess,
) -> None:
    async with connect(search_relay.url) as client:
        await client.send(["REQ", "bad", {"search": 42}])
        closed = await client.receive()
        assert closed[:2] == ["CLOSED", "bad"] and closed[2].startswith("invalid: 'search'")
        assert await client.query("ok", {"search": word()}) == []


async def test_live_events_match_every_search_word(search_relay: RelayProcess) -> None:
    signer = Signer()
    w = word()
    async with connect(search_relay.url) as subscriber, connect(search_relay.url) as publisher:
        await subscriber.send(["REQ", "live", {"search": f"{w} Sunrise"}])
        assert await subscriber.receive() == ["EOSE", "live"]
        miss = signer.sign(1, f"{w} at sunset")
        partial = signer.sign(1, f"sunrises and {w}x")  # neither word as a whole word
        hit = signer.sign(1, f"SUNRISE, {w}!")
        for event in (miss, partial, hit):
            assert (await publisher.publish(event))[2] is True
        message = await subscriber.receive()
        assert message[:2] == ["EVENT", "live"] and message[2]["id"] == hit.id
        await subscriber.expect_silence(0.5)


async def test_nip11_lists_45_and_50(search_relay: RelayProcess) -> None:
    headers = {"Accept": "application/nostr+json"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(search_relay.http_url, headers=headers) as r,
    ):
        document = await r.json(content_type=None)
    assert {45, 50} <= set(document["supported_nips"])


@pytest.fixture
async def own_database(postgres_server_url: str) -> AsyncIterator[str]:
    async with migrated_database(postgres_server_url, "relay_nip50") as url:
        yield url


async def test_a_stemming_configuration_matches_inflections(
    start_relay: RelayStarter, own_database: str
) -> None:
    """search.config = english (on a database of its own: the stored documents follow the
    configuration of the relay that built them): "running" finds "runs"."""
    english = start_relay.start(
        workers=1,
        DATABASE_URL=own_database,
        RELAY_SEARCH__ENABLED="true",
        RELAY_SEARCH__CONFIG="english",
    )
    async with await psycopg.AsyncConnection.connect(own_database, autocommit=True) as conn:
        await wait_until_ready(conn, "english")
    w = word()
    runs = Signer().sign(1, f"{w} runs every morning")
    async with connect(english.url) as client:
        assert (await client.publish(runs))[2] is True
        found = await client.query("e", {"search": f"{w} running"})
        assert [e["id"] for e in found] == [runs.id]
        assert await client.query("e2", {"search": f"{w} walking"}) == []


async def stored_document(conn: psycopg.AsyncConnection[Any], event_id: str) -> str | None:
    cursor = await conn.execute(
        "SELECT search_doc::text FROM events WHERE id = %s", (bytes.fromhex(event_id),)
    )
    row = await cursor.fetchone()
    assert row is not None
    return None if row[0] is None else str(row[0])


async def test_documents_follow_search_being_enabled_changed_and_turned_off(
    start_relay: RelayStarter, own_database: str
) -> None:
    """Events stored while search is off get their document when it is enabled (the backfill);
    a configuration change recomputes them; --off stops new ones; enabling again catches up."""
    plain = start_relay.start(workers=1, DATABASE_URL=own_database)
    signer = Signer()
    before = [signer.sign(1, f"stored before search, runs {n}") for n in range(5)]
    reaction = signer.sign(7, "runs")
    async with connect(plain.url) as client:
        for event in [*before, reaction]:
            assert (await client.publish(event))[2] is True
    async with await psycopg.AsyncConnection.connect(own_database, autocommit=True) as conn:
        assert await search_state(conn) is None  # migrations alone build nothing: opt-in
        assert await stored_document(conn, before[0].id) is None
        assert await ensure_search_documents(own_database, "simple") is True
        assert await search_state(conn) == SearchState("simple", True)
        assert await stored_document(conn, before[0].id) == (
            "'0':5 'before':2 'runs':4 'search':3 'stored':1"
        )
        assert await stored_document(conn, reaction.id) is None  # not a searchable kind
        assert await ensure_search_documents(own_database, "simple") is False  # nothing to do
        cursor = await conn.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (INDEX_NAME,)
        )
        assert await cursor.fetchone() == (True,)
        # Another configuration: every stored document is recomputed (stemmed).
        assert await ensure_search_documents(own_database, "english") is True
        assert await stored_document(conn, before[0].id) == "'0':5 'run':4 'search':3 'store':1"
        # Off: new events get no document; on again: only they are written.
        assert await stop_search_documents(own_database) is True
        assert await stop_search_documents(own_database) is False
        async with connect(plain.url) as client:
            later = signer.sign(1, "stored while search was off")
            assert (await client.publish(later))[2] is True
        assert await stored_document(conn, later.id) is None
        assert await search_state(conn) == SearchState("english", False)
        assert await ensure_search_documents(own_database, "english") is True
        assert await stored_document(conn, later.id) == "'search':3 'store':1"
        with pytest.raises(psycopg.Error):
            await ensure_search_documents(own_database, "no_such_config")


async def test_a_stopped_backfill_resumes_from_its_cursor(own_database: str) -> None:
    """search_state's cursor: a backfill that stopped midway (a worker killed) leaves the
    newer events done, and the next one does only the older ones."""
    signer = Signer()
    now = int(time.time())
    events = [signer.sign(1, f"note number {n}", created_at=now - n) for n in range(6)]
    async with await psycopg.AsyncConnection.connect(own_database, autocommit=True) as conn:
        for event in events:
            await conn.execute(
                "INSERT INTO events (id, pubkey, created_at, kind, raw) VALUES (%s, %s, %s, 1, %s)",
                (bytes.fromhex(event.id), bytes.fromhex(event.pubkey), event.created_at,
                 encode_event(event).decode()),
            )  # fmt: skip
        # As a backfill leaves it after the newest three: their documents written, the cursor
        # at the third newest.
        await conn.execute(
            "INSERT INTO search_state (config, cursor_created_at, cursor_id) VALUES"
            " ('simple', %s, %s)",
            (events[2].created_at, bytes.fromhex(events[2].id)),
        )
        await conn.execute(
            "UPDATE events SET search_doc = 'done'::tsvector WHERE id = ANY(%s)",
            ([bytes.fromhex(e.id) for e in events[:3]],),
        )
        assert await ensure_search_documents(own_database, "simple") is True
        docs = [await stored_document(conn, e.id) for e in events]
    assert docs[:3] == ["'done'"] * 3  # not recomputed: before the cursor
    assert docs[3:] == [f"'{n}':3 'note':1 'number':2" for n in (3, 4, 5)]


async def test_old_matches_are_found_and_ranked_with_the_new(search_relay: RelayProcess) -> None:
    """Candidates are the newest matches, however old: a week-old note ranks first."""
    signer = Signer()
    w = word()
    now = int(time.time())
    old = signer.sign(1, f"{w} {w} from last week", created_at=now - 7 * 86400)
    new = signer.sign(1, f"{w} today", created_at=now - 60)
    async with connect(search_relay.url) as client:
        for event in (old, new):
            assert (await client.publish(event))[2] is True
        found = await client.query("w", {"search": w})
        assert [e["id"] for e in found] == [old.id, new.id]  # the old one is more relevant
        assert [e["id"] for e in await client.query("w2", {"search": w, "since": now - 3600})] == [
            new.id
        ]


async def test_without_search_enabled_search_is_unsupported(relay: RelayProcess) -> None:
    """The default: no search index on the write path; `search` is refused, NIP-11 lacks 50."""
    async with connect(relay.url) as client:
        await client.send(["REQ", "s", {"search": "nostr"}])
        _, closed = await client.receive_until(lambda m: m[1] == "s")
        assert closed[0] == "CLOSED" and closed[2].startswith("unsupported: search (NIP-50)")
        assert await client.query("still", {"limit": 1}) is not None  # the connection lives on
    headers = {"Accept": "application/nostr+json"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(relay.http_url, headers=headers) as r,
    ):
        document = await r.json(content_type=None)
    assert 50 not in document["supported_nips"] and 45 in document["supported_nips"]
