"""Kind classes, NIP-09 deletion and NIP-40 expiration, end to end over WebSockets."""

from __future__ import annotations

import asyncio
import time

from cluster.nostr.signing import Signer
from tests.client import connect
from tests.services import RelayProcess


async def test_replaceable_keeps_newest_and_refuses_older(relay: RelayProcess) -> None:
    signer = Signer()
    now = int(time.time())
    old, new = (
        signer.sign(0, '{"name":"old"}', created_at=now - 5),
        signer.sign(0, '{"name":"new"}', created_at=now),
    )
    async with connect(relay.url) as client:
        assert (await client.publish(old))[2] is True
        assert (await client.publish(new))[2] is True
        stale = await client.publish(signer.sign(0, '{"name":"stale"}', created_at=now - 60))
        assert stale[2] is True and stale[3].startswith("duplicate:")
        stored = await client.query("p", {"kinds": [0], "authors": [signer.pubkey]})
        assert [e["id"] for e in stored] == [new.id]


async def test_replaceable_tie_keeps_lowest_id(relay: RelayProcess) -> None:
    signer = Signer()
    now = int(time.time())
    versions = [signer.sign(10002, f"v{i}", created_at=now) for i in range(4)]
    async with connect(relay.url) as client:
        for event in versions:
            assert (await client.publish(event))[2] is True
        stored = await client.query("t", {"kinds": [10002], "authors": [signer.pubkey]})
        assert [e["id"] for e in stored] == [min(e.id for e in versions)]


async def test_addressable_versions_are_keyed_by_d_tag(relay: RelayProcess) -> None:
    signer = Signer()
    now = int(time.time())
    first = signer.sign(30023, "draft", [["d", "post"]], created_at=now - 10)
    second = signer.sign(30023, "final", [["d", "post"]], created_at=now)
    other = signer.sign(30023, "another", [["d", "other"]], created_at=now - 20)
    async with connect(relay.url) as client:
        for event in (first, second, other):
            assert (await client.publish(event))[2] is True
        stored = await client.query("a", {"kinds": [30023], "authors": [signer.pubkey]})
        assert [e["id"] for e in stored] == [second.id, other.id]
        by_d = await client.query("d", {"kinds": [30023], "#d": ["post"]})
        assert [e["id"] for e in by_d] == [second.id]


async def test_deletion_by_e_tag_only_affects_the_authors_events(relay: RelayProcess) -> None:
    alice, mallory = Signer(), Signer()
    note = alice.sign(1, "to be deleted")
    keep = alice.sign(1, "keep me")
    async with connect(relay.url) as client:
        for event in (note, keep):
            assert (await client.publish(event))[2] is True
        forged = mallory.sign(5, "", [["e", note.id]])
        assert (await client.publish(forged))[2] is True
        assert len(await client.query("x", {"ids": [note.id]})) == 1  # not Mallory's to delete
        deletion = alice.sign(5, "oops", [["e", note.id]])
        assert (await client.publish(deletion))[2] is True
        assert await client.query("y", {"ids": [note.id]}) == []
        assert len(await client.query("z", {"ids": [keep.id, deletion.id]})) == 2
        again = await client.publish(note)
        assert again[2] is False and again[3].startswith("blocked:")


async def test_deletion_by_a_tag_removes_versions_up_to_its_time(relay: RelayProcess) -> None:
    signer = Signer()
    now = int(time.time())
    article = signer.sign(30023, "v1", [["d", "gone"]], created_at=now - 100)
    async with connect(relay.url) as client:
        assert (await client.publish(article))[2] is True
        address = f"30023:{signer.pubkey}:gone"
        deletion = signer.sign(5, "", [["a", address]], created_at=now - 50)
        assert (await client.publish(deletion))[2] is True
        assert await client.query("a1", {"kinds": [30023], "authors": [signer.pubkey]}) == []
        older = signer.sign(30023, "v0", [["d", "gone"]], created_at=now - 60)
        assert (await client.publish(older))[3].startswith("blocked:")
        newer = signer.sign(30023, "v2", [["d", "gone"]], created_at=now)
        assert (await client.publish(newer))[2] is True
        stored = await client.query("a2", {"kinds": [30023], "authors": [signer.pubkey]})
        assert [e["id"] for e in stored] == [newer.id]


async def test_ephemeral_events_are_delivered_but_not_stored(relay: RelayProcess) -> None:
    signer = Signer()
    async with connect(relay.url) as subscriber, connect(relay.url) as publisher:
        await subscriber.send(["REQ", "eph", {"kinds": [20001], "authors": [signer.pubkey]}])
        assert await subscriber.receive() == ["EOSE", "eph"]
        event = signer.sign(20001, "now you see me")
        assert await publisher.publish(event) == ["OK", event.id, True, ""]
        message = await subscriber.receive()
        assert message[:2] == ["EVENT", "eph"] and message[2]["id"] == event.id
        assert await publisher.query("later", {"ids": [event.id]}) == []


async def test_expiration_hides_and_refuses_expired_events(relay: RelayProcess) -> None:
    signer = Signer()
    now = int(time.time())
    async with connect(relay.url) as client:
        expired = signer.sign(1, "past", [["expiration", str(now - 1)]])
        ok = await client.publish(expired)
        assert ok[2] is False and ok[3].startswith("invalid:")
        soon = signer.sign(1, "short-lived", [["expiration", str(now + 2)]])
        assert (await client.publish(soon))[2] is True
        assert len(await client.query("e1", {"ids": [soon.id]})) == 1
        await asyncio.sleep(3.1)
        assert await client.query("e2", {"ids": [soon.id]}) == []
        await client.send(["COUNT", "e3", {"ids": [soon.id]}])
        assert await client.receive() == ["COUNT", "e3", {"count": 0}]


async def test_live_event_published_during_req_arrives_once_after_eose(
    relay: RelayProcess,
) -> None:
    signer = Signer()
    async with connect(relay.url) as subscriber, connect(relay.url) as publisher:
        for i in range(30):
            assert (await publisher.publish(signer.sign(1, f"stored {i}")))[2]
        live = [signer.sign(1, f"live {i}") for i in range(5)]
        await subscriber.send(["REQ", "mix", {"authors": [signer.pubkey]}])
        for event in live:
            assert (await publisher.publish(event))[2]
        received: list[str] = []
        eose_at = None
        while len(received) < 35 or eose_at is None:
            message = await subscriber.receive()
            if message[0] == "EOSE":
                eose_at = len(received)
            elif message[0] == "EVENT":
                received.append(message[2]["id"])
        assert len(received) == len(set(received)) == 35  # every event exactly once
        assert eose_at >= 30  # all stored ones came before EOSE
        await subscriber.expect_silence(0.3)
