"""NIP-62 request to vanish against a real relay (two workers) and its PostgreSQL.

A request naming this relay deletes everything its author published up to its created_at,
the gift wraps addressed to them, and refuses those events from then on, through every
worker; a later event of the same author is welcome; a request for other relays is stored
like any regular event and deletes nothing.
"""

from __future__ import annotations

import time

import psycopg

from cluster.nostr.signing import Signer
from cluster.nostr.vanish import ALL_RELAYS, VANISH_KIND
from tests.client import connect
from tests.services import RelayProcess


async def stored(database_url: str, event_id: str) -> bool:
    """Read the table itself: gift wraps are served only to authenticated recipients."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cursor = await conn.execute(
            "SELECT 1 FROM events WHERE id = %s", (bytes.fromhex(event_id),)
        )
        return await cursor.fetchone() is not None


async def test_a_request_to_vanish_deletes_and_keeps_deleted(
    relay: RelayProcess, database_url: str
) -> None:
    author, other = Signer(), Signer()
    now = int(time.time())
    note = author.sign(1, "soon gone", created_at=now - 30)
    profile = author.sign(0, '{"name":"gone"}', created_at=now - 20)
    article = author.sign(30023, "long", tags=[["d", "a1"]], created_at=now - 10)
    deletion = author.sign(5, "", tags=[["e", note.id]], created_at=now - 5)
    wrap = other.sign(1059, "sealed", tags=[["p", author.pubkey]], created_at=now - 5)
    kept = other.sign(1, "stays", created_at=now - 5)
    async with connect(relay.url) as client:
        for event in (note, profile, article, wrap, kept):
            assert (await client.publish(event))[2] is True
        assert (await client.publish(deletion))[2] is True  # NIP-09 on the note, before vanishing
        elsewhere = author.sign(VANISH_KIND, "", tags=[["relay", "wss://elsewhere.example"]])
        assert (await client.publish(elsewhere))[2] is True  # stored, deletes nothing here
        assert len(await client.query("before", {"authors": [author.pubkey]})) == 4
        assert await stored(database_url, wrap.id)

        request = author.sign(VANISH_KIND, "please", tags=[["relay", relay.url]], created_at=now)
        assert await client.publish(request) == ["OK", request.id, True, ""]
        assert await client.query("after", {"authors": [author.pubkey]}) == []
        assert not await stored(database_url, wrap.id)
        assert [e["id"] for e in await client.query("kept", {"authors": [other.pubkey]})] == [
            kept.id
        ]

    # Every worker refuses the deleted events (and anything else up to the request's time).
    for _ in range(4):
        async with connect(relay.url) as client:
            for event in (profile, article, author.sign(1, "late copy", created_at=now - 1)):
                ok = await client.publish(event)
                assert ok[2] is False and ok[3].startswith("blocked:") and "NIP-62" in ok[3]
    async with connect(relay.url) as client:
        back = author.sign(1, "a new start", created_at=now + 1)
        assert (await client.publish(back))[2] is True
        assert [e["id"] for e in await client.query("new", {"authors": [author.pubkey]})] == [
            back.id
        ]
        # A deletion request against the request to vanish changes nothing (NIP-62).
        undo = author.sign(5, "", tags=[["e", request.id]], created_at=now + 2)
        assert (await client.publish(undo))[2] is True
        assert (await client.publish(profile))[2] is False


async def test_all_relays_and_malformed_requests(relay: RelayProcess) -> None:
    author = Signer()
    async with connect(relay.url) as client:
        old = author.sign(1, "x", created_at=int(time.time()) - 10)
        assert (await client.publish(old))[2] is True
        everywhere = author.sign(VANISH_KIND, "", tags=[["relay", ALL_RELAYS]])
        assert (await client.publish(everywhere))[2] is True
        assert await client.query("gone", {"authors": [author.pubkey]}) == []
        bare = Signer().sign(VANISH_KIND, "no relay tag")
        ok = await client.publish(bare)
        assert ok[2] is False and ok[3].startswith("invalid:")
        assert (await client.publish(Signer().sign(1, "still served")))[2] is True
