"""NIP-50 search through a real relay: matching combined with other fields, relevance order,
limits, ignored extensions, live events, COUNT, and a text search configuration that differs
from the index's."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import aiohttp
import psycopg
import pytest

from cluster.nostr.signing import Signer
from cluster.store.search import INDEX_NAME, RECENT_WINDOW, index_config, rebuild_search_index
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
            for _ in range(400):
                if await index_config(conn) is not None:
                    break
                await asyncio.sleep(0.05)
            assert await index_config(conn) == "simple", "the relay did not build its index"
        yield relay
    finally:
        starter.stop_all()


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


async def test_a_configuration_the_index_was_not_built_for_still_answers_right(
    start_relay: RelayStarter, search_relay: RelayProcess
) -> None:
    """search.config = english on the session database, whose index is built for 'simple':
    the relay matches with 'english' on both sides (stemmed), without the index."""
    english = start_relay.start(
        workers=1, RELAY_SEARCH__ENABLED="true", RELAY_SEARCH__CONFIG="english"
    )
    w = word()
    runs = Signer().sign(1, f"{w} runs every morning")
    async with connect(english.url) as client:
        assert (await client.publish(runs))[2] is True
        found = await client.query("e", {"search": f"{w} running"})
        assert [e["id"] for e in found] == [runs.id]
        assert await client.query("e2", {"search": f"{w} walking"}) == []


@pytest.fixture
async def own_database(postgres_server_url: str) -> AsyncIterator[str]:
    async with migrated_database(postgres_server_url, "relay_nip50") as url:
        yield url


async def test_rebuild_builds_the_index_for_the_configured_configuration(
    own_database: str,
) -> None:
    async with await psycopg.AsyncConnection.connect(own_database, autocommit=True) as conn:
        assert await index_config(conn) is None  # migrations make no index: search is opt-in
        assert await rebuild_search_index(own_database, "simple", only_if_missing=True) is True
        assert await index_config(conn) == "simple"
        assert await rebuild_search_index(own_database, "english", only_if_missing=True) is False
        assert await rebuild_search_index(own_database, "english") is True
        assert await index_config(conn) == "english"
        assert await rebuild_search_index(own_database, "english") is False
        cursor = await conn.execute(
            "SELECT c.relname, i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = 'events'::regclass AND pg_get_indexdef(i.indexrelid) LIKE %s",
            ("%to_tsvector%",),
        )
        rows = await cursor.fetchall()
        assert len(rows) == 1, rows  # the 'simple' index is gone, the new one took its name
        name, valid, definition = rows[0]
        assert (name, valid) == (INDEX_NAME, True)
        assert "to_tsvector('english'::regconfig" in definition
        with pytest.raises(psycopg.Error):
            await rebuild_search_index(own_database, "no_such_config")


async def test_matches_older_than_the_recent_window_are_found_too(
    search_relay: RelayProcess,
) -> None:
    """Candidates come from the last RECENT_WINDOW seconds first, then from before."""
    signer = Signer()
    w = word()
    now = int(time.time())
    old = signer.sign(1, f"{w} {w} from last week", created_at=now - RECENT_WINDOW * 7)
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
