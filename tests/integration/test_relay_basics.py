"""End-to-end NIP-01 behaviour over real WebSockets against a real relay and PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import msgspec

from cluster.nostr.signing import Signer
from tests.client import connect
from tests.services import RelayProcess


async def test_publish_then_query_newest_first_with_limit(relay: RelayProcess) -> None:
    signer = Signer()
    now = int(time.time())
    events = [signer.sign(1, f"note {i}", created_at=now - 10 + i) for i in range(5)]
    async with connect(relay.url) as client:
        for event in events:
            assert await client.publish(event) == ["OK", event.id, True, ""]
        stored = await client.query("q", {"authors": [signer.pubkey]})
        assert [e["id"] for e in stored] == [e.id for e in reversed(events)]
        limited = await client.query("q2", {"authors": [signer.pubkey], "limit": 2})
        assert [e["id"] for e in limited] == [events[4].id, events[3].id]
        assert stored[0] == msgspec.to_builtins(events[4])


async def test_duplicate_is_acknowledged_with_prefix(relay: RelayProcess) -> None:
    event = Signer().sign(1, "once")
    async with connect(relay.url) as client:
        assert (await client.publish(event))[2] is True
        ok = await client.publish(event)
        assert ok[2] is True and ok[3].startswith("duplicate:")


async def test_filters_in_one_req_are_ored_and_deduplicated(relay: RelayProcess) -> None:
    alice, bob = Signer(), Signer()
    a = alice.sign(1, "a", [["t", "shared-tag-x"]])
    b = bob.sign(7, "b")
    async with connect(relay.url) as client:
        for event in (a, b):
            assert (await client.publish(event))[2]
        got = await client.query(
            "or",
            {"authors": [alice.pubkey]},
            {"kinds": [7], "authors": [bob.pubkey]},
            {"#t": ["shared-tag-x"]},
        )
        assert sorted(e["id"] for e in got) == sorted([a.id, b.id])


async def test_live_delivery_reaches_subscribers_on_every_worker(relay: RelayProcess) -> None:
    signer = Signer()
    async with (
        aiohttp.ClientSession() as session,
        connect(relay.url) as publisher,
    ):
        # Several subscribers so both gunicorn workers hold some (the kernel spreads accepts).
        subscribers = [await session.ws_connect(relay.url) for _ in range(6)]
        try:
            for ws in subscribers:
                await ws.send_json(["REQ", "live", {"authors": [signer.pubkey]}])
                assert (await ws.receive_json(timeout=10)) == ["EOSE", "live"]
            event = signer.sign(1, "live!")
            assert (await publisher.publish(event))[2]
            for ws in subscribers:
                message = await ws.receive_json(timeout=10)
                assert message[:2] == ["EVENT", "live"] and message[2]["id"] == event.id
            # CLOSE stops delivery on that subscription only.
            await subscribers[0].send_json(["CLOSE", "live"])
            second = signer.sign(1, "after close")
            assert (await publisher.publish(second))[2]
            for ws in subscribers[1:]:
                assert (await ws.receive_json(timeout=10))[2]["id"] == second.id
            try:
                extra = await subscribers[0].receive(timeout=0.5)
                raise AssertionError(f"closed subscription still received {extra}")
            except TimeoutError:
                pass
        finally:
            for ws in subscribers:
                await ws.close()


async def test_count(relay: RelayProcess) -> None:
    signer = Signer()
    async with connect(relay.url) as client:
        for i in range(3):
            assert (await client.publish(signer.sign(1, f"c{i}")))[2]
        await client.send(
            ["COUNT", "c", {"authors": [signer.pubkey]}, {"kinds": [1], "authors": [signer.pubkey]}]
        )
        assert await client.receive() == ["COUNT", "c", {"count": 3}]


async def test_health_and_nip11(relay: RelayProcess) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{relay.http_url}/health") as response:
            assert response.status == 200
            body = await response.json()
            assert body["postgres"] == "ok"
        async with session.get(
            relay.http_url, headers={"Accept": "application/nostr+json"}
        ) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == "*"
            assert response.content_type == "application/nostr+json"
            doc = await response.json(content_type=None)
            assert 1 in doc["supported_nips"] and 11 in doc["supported_nips"]
            assert doc["limitation"]["max_subscriptions"] == 5  # from the relay's environment
            assert doc["limitation"]["max_limit"] == 100
            assert doc["software"] and doc["version"]


async def test_stored_events_survive_a_burst_of_concurrent_publishers(relay: RelayProcess) -> None:
    signer = Signer()
    events = [signer.sign(1, f"burst {i}") for i in range(200)]

    async def publish_slice(part: list) -> list:  # type: ignore[type-arg]
        async with connect(relay.url) as client:
            for event in part:
                await client.send(["EVENT", msgspec.to_builtins(event)])
            oks = []
            while len(oks) < len(part):
                message = await client.receive()
                if message[0] == "OK":
                    oks.append(message)
            return oks

    results = await asyncio.gather(*(publish_slice(events[i::4]) for i in range(4)))
    assert all(ok[2] is True for oks in results for ok in oks)
    async with connect(relay.url) as client:
        stored = await client.query("all", {"authors": [signer.pubkey], "limit": 100})
        await client.send(["COUNT", "n", {"authors": [signer.pubkey]}])
        # A live copy of an older event may still reach "all" from another worker's fan-out
        # before our CLOSE lands: only the COUNT answer matters here.
        _, counted = await client.receive_until(lambda m: m[0] != "EVENT")
        assert counted == ["COUNT", "n", {"count": 200}]
    assert len(stored) == 100
