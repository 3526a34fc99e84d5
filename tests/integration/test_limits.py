"""Each configurable limit, end to end over a real WebSocket against the real relay.

The relay under test runs with the small limits set in relay_env (tests/conftest.py); the tests
read them from there so the numbers live in one place. Refused events must not be stored.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from cluster.nostr.event import Event
from cluster.nostr.signing import Signer
from tests.client import RelayClient, connect
from tests.services import RelayProcess

CREATED_AT_FUTURE = 900  # LimitSettings.created_at_future default, not overridden by relay_env
MAX_SUBID_LENGTH = 64  # LimitSettings.max_subid_length default, not overridden by relay_env


def limit(relay_env: dict[str, str], name: str) -> int:
    return int(relay_env[f"RELAY_LIMITS__{name.upper()}"])


async def assert_not_stored(client: RelayClient, event: Event) -> None:
    assert await client.query("stored", {"ids": [event.id]}) == []


async def assert_stored(client: RelayClient, event: Event) -> None:
    stored = await client.query("stored", {"ids": [event.id]})
    assert stored == [msgspec.to_builtins(event)]


def assert_refused(ok: list[Any], event: Event) -> None:
    assert len(ok) == 4 and ok[:3] == ["OK", event.id, False], ok
    assert ok[3].startswith("invalid:"), ok


# ---- subscriptions and filters ---------------------------------------------------------------


async def test_max_subscriptions(relay: RelayProcess, relay_env: dict[str, str]) -> None:
    max_subscriptions = limit(relay_env, "max_subscriptions")
    signer = Signer()
    wanted = {"authors": [signer.pubkey]}
    open_ids = [f"s{i}" for i in range(max_subscriptions)]
    async with connect(relay.url) as client:
        for sub_id in open_ids:
            await client.send(["REQ", sub_id, wanted])
            assert await client.receive() == ["EOSE", sub_id]
        # One more is refused with a NIP-01 machine-readable prefix.
        await client.send(["REQ", "extra", wanted])
        refused = await client.receive()
        assert len(refused) == 3 and refused[:2] == ["CLOSED", "extra"], refused
        assert refused[2].startswith("blocked:"), refused
        # Reusing an open id overwrites that subscription (NIP-01): no new slot needed.
        await client.send(["REQ", open_ids[0], wanted])
        assert await client.receive() == ["EOSE", open_ids[0]]
        # Live events reach each open subscription once, and never the refused one.
        event = signer.sign(1, "to every open subscription")
        await client.send(["EVENT", msgspec.to_builtins(event)])
        received = [await client.receive() for _ in range(max_subscriptions + 1)]
        assert ["OK", event.id, True, ""] in received
        deliveries = sorted(m[1] for m in received if m[0] == "EVENT" and m[2]["id"] == event.id)
        assert deliveries == sorted(open_ids)
        await client.expect_silence(0.3)
        # After a CLOSE, a new subscription fits again.
        await client.send(["CLOSE", open_ids[1]])
        await client.send(["REQ", "extra", wanted])
        first = await client.receive()
        assert first[:2] == ["EVENT", "extra"] and first[2]["id"] == event.id
        assert await client.receive() == ["EOSE", "extra"]


async def test_max_filters(relay: RelayProcess, relay_env: dict[str, str]) -> None:
    max_filters = limit(relay_env, "max_filters")
    signer = Signer()
    async with connect(relay.url) as client:
        for verb in ("REQ", "COUNT"):
            await client.send([verb, "many", *[{"authors": [signer.pubkey]}] * (max_filters + 1)])
            refused = await client.receive()
            assert len(refused) == 3 and refused[:2] == ["CLOSED", "many"], refused
            assert refused[2].startswith("invalid:"), refused
        await client.send(["REQ", "enough", *[{"authors": [signer.pubkey]}] * max_filters])
        assert await client.receive() == ["EOSE", "enough"]
        await client.send(["COUNT", "enough-count", *[{"authors": [signer.pubkey]}] * max_filters])
        assert await client.receive() == ["COUNT", "enough-count", {"count": 0}]


async def test_max_subscription_id_length(relay: RelayProcess) -> None:
    too_long, longest = "x" * (MAX_SUBID_LENGTH + 1), "y" * MAX_SUBID_LENGTH
    async with connect(relay.url) as client:
        for verb in ("REQ", "COUNT"):
            await client.send([verb, too_long, {"kinds": [1], "limit": 1}])
            refused = await client.receive()
            assert len(refused) == 3 and refused[:2] == ["CLOSED", too_long], refused
            assert refused[2].startswith("invalid:"), refused
        await client.send(["REQ", longest, {"ids": ["0" * 64]}])
        assert await client.receive() == ["EOSE", longest]


# ---- event limits ----------------------------------------------------------------------------


async def test_max_event_tags(relay: RelayProcess, relay_env: dict[str, str]) -> None:
    max_tags = limit(relay_env, "max_event_tags")
    signer = Signer()
    too_many = signer.sign(1, "tags", [["t", f"tag{i}"] for i in range(max_tags + 1)])
    enough = signer.sign(1, "tags", [["t", f"tag{i}"] for i in range(max_tags)])
    async with connect(relay.url) as client:
        assert_refused(await client.publish(too_many), too_many)
        assert await client.publish(enough) == ["OK", enough.id, True, ""]
        await assert_not_stored(client, too_many)
        await assert_stored(client, enough)


@pytest.mark.parametrize("char", ["a", "é", "€"], ids=["ascii", "2-byte", "3-byte"])
async def test_max_content_length(
    relay: RelayProcess, relay_env: dict[str, str], char: str
) -> None:
    # NIP-11 max_content_length counts characters, not bytes.
    max_length = limit(relay_env, "max_content_length")
    signer = Signer()
    too_long = signer.sign(1, char * (max_length + 1))
    longest = signer.sign(1, char * max_length)
    async with connect(relay.url) as client:
        assert_refused(await client.publish(too_long), too_long)
        assert await client.publish(longest) == ["OK", longest.id, True, ""]
        await assert_not_stored(client, too_long)
        await assert_stored(client, longest)


@pytest.mark.parametrize("ahead", [CREATED_AT_FUTURE + 60, 3600, 10**9])
async def test_created_at_too_far_in_the_future(relay: RelayProcess, ahead: int) -> None:
    signer = Signer()
    now = int(time.time())
    future = signer.sign(1, "from the future", created_at=now + ahead)
    soon = signer.sign(1, "a little ahead", created_at=now + CREATED_AT_FUTURE - 60)
    async with connect(relay.url) as client:
        assert_refused(await client.publish(future), future)
        assert await client.publish(soon) == ["OK", soon.id, True, ""]
        await assert_not_stored(client, future)
        await assert_stored(client, soon)


# ---- query limits ----------------------------------------------------------------------------

PUBLISHED = 105


@pytest.fixture(scope="module")
async def many_events(relay: RelayProcess) -> AsyncIterator[list[Event]]:
    """105 events by one author, oldest first, with distinct created_at."""
    signer = Signer()
    now = int(time.time())
    events = [signer.sign(1, f"n{i}", created_at=now - 1000 + i) for i in range(PUBLISHED)]
    async with connect(relay.url) as client:
        for event in events:
            await client.send(["EVENT", msgspec.to_builtins(event)])
        oks = [await client.receive() for _ in events]
    assert sorted(oks) == sorted(["OK", event.id, True, ""] for event in events)
    yield events


async def test_limit_above_max_limit_is_capped(
    relay: RelayProcess, relay_env: dict[str, str], many_events: list[Event]
) -> None:
    max_limit = limit(relay_env, "max_limit")
    assert max_limit < PUBLISHED
    author = many_events[0].pubkey
    async with connect(relay.url) as client:
        got = await client.query("capped", {"authors": [author], "limit": 1000})
        await client.send(["COUNT", "all", {"authors": [author]}])
        assert await client.receive() == ["COUNT", "all", {"count": PUBLISHED}]
    newest = [e.id for e in reversed(many_events)][:max_limit]
    assert len(got) == max_limit
    assert [e["id"] for e in got] == newest


async def test_filter_without_limit_gets_default_limit(
    relay: RelayProcess, relay_env: dict[str, str], many_events: list[Event]
) -> None:
    default_limit = limit(relay_env, "default_limit")
    author = many_events[0].pubkey
    async with connect(relay.url) as client:
        got = await client.query("default", {"authors": [author]})
        below = await client.query("below", {"authors": [author], "limit": 7})
    newest = [e.id for e in reversed(many_events)]
    assert len(got) == default_limit
    assert [e["id"] for e in got] == newest[:default_limit]
    assert [e["id"] for e in below] == newest[:7]


# ---- NIP-11 ----------------------------------------------------------------------------------


async def test_nip11_advertises_the_configured_limits(
    relay: RelayProcess, relay_env: dict[str, str]
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(relay.http_url, headers={"Accept": "application/nostr+json"}) as response,
    ):
        assert response.status == 200
        doc = await response.json(content_type=None)
    limitation = doc["limitation"]
    assert limitation["max_subscriptions"] == limit(relay_env, "max_subscriptions") == 5
    assert limitation["max_filters"] == limit(relay_env, "max_filters") == 4
    assert limitation["max_event_tags"] == limit(relay_env, "max_event_tags") == 50
    assert limitation["max_content_length"] == limit(relay_env, "max_content_length") == 2000
    assert limitation["max_message_length"] == limit(relay_env, "max_message_bytes") == 65536
    assert limitation["max_limit"] == limit(relay_env, "max_limit") == 100
    assert limitation["default_limit"] == limit(relay_env, "default_limit") == 50
    assert limitation["max_subid_length"] == MAX_SUBID_LENGTH
    assert limitation["created_at_upper_limit"] == CREATED_AT_FUTURE
