"""NIP-42 AUTH, DM privacy, NIP-13, NIP-70, rate limits and connection limits over WebSockets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import msgspec
import pytest

from cluster.nostr.event import Event
from cluster.nostr.signing import Signer
from cluster.relay.addresses import client_ip
from tests.client import RelayClient, connect
from tests.services import RelayProcess, RelayStarter

METRICS_TOKEN = "m" * 40


@pytest.fixture(scope="module")
def strict_relay(
    relay_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RelayProcess]:
    starter = RelayStarter(relay_env, tmp_path_factory.mktemp("strict"))
    try:
        yield starter.start(
            RELAY_AUTH__REQUIRED_FOR_WRITES="true",
            RELAY_POLICY__MIN_POW_DIFFICULTY="8",
            RELAY_NETWORK__METRICS_TOKEN=METRICS_TOKEN,
        )
    finally:
        starter.stop_all()


@pytest.fixture(scope="module")
def limited_relay(
    relay_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RelayProcess]:
    starter = RelayStarter(relay_env, tmp_path_factory.mktemp("limited"))
    try:
        yield starter.start(
            RELAY_RATE_LIMITS__EXEMPT="[]",
            RELAY_RATE_LIMITS__EVENTS_PER_MINUTE_PER_IP="6",
            RELAY_RATE_LIMITS__EVENTS_PER_MINUTE_PER_PUBKEY="4",
            RELAY_RATE_LIMITS__REQS_PER_MINUTE_PER_IP="5",
            RELAY_RATE_LIMITS__CONNECTIONS_PER_IP="3",
        )
    finally:
        starter.stop_all()


def auth_event(signer: Signer, challenge: str, relay_url: str, **overrides: Any) -> Event:
    tags = [["relay", overrides.pop("relay", relay_url)], ["challenge", challenge]]
    return signer.sign(22242, "", tags, created_at=overrides.pop("created_at", None))


def mined(
    signer: Signer, kind: int, content: str, bits: int, tags: list[list[str]] | None = None
) -> Event:
    """NIP-13: grind a nonce tag until the id has `bits` leading zero bits (bounded)."""
    for nonce in range(1_000_000):
        event = signer.sign(kind, content, [*(tags or []), ["nonce", str(nonce), str(bits)]])
        if int(event.id, 16) >> (256 - bits) == 0:
            return event
    raise AssertionError("could not mine")


async def authenticate(
    client: RelayClient, signer: Signer, relay_url: str, challenge: str | None = None
) -> str:
    """Answer the connection's challenge (provoked, if not known yet, by a protected event
    that needs AUTH); returns the challenge."""
    if challenge is None:
        probe = signer.sign(1, "probe", [["-"]])
        await client.send(["EVENT", msgspec.to_builtins(probe)])
        challenge_message = await client.receive()
        assert challenge_message[0] == "AUTH", challenge_message
        challenge = str(challenge_message[1])
        assert (await client.receive())[3].startswith("auth-required:")
    event = auth_event(signer, challenge, relay_url)
    await client.send(["AUTH", msgspec.to_builtins(event)])
    assert await client.receive() == ["OK", event.id, True, ""]
    return str(challenge)


async def test_writes_need_auth_and_auth_checks_challenge_url_and_time(
    strict_relay: RelayProcess,
) -> None:
    signer = Signer()
    async with connect(strict_relay.url) as client:
        challenge = (await client.receive())[1]  # offered up front when writes need AUTH
        note = mined(signer, 1, "before auth", 8)
        ok = await client.publish(note)
        assert ok[2] is False and ok[3].startswith("auth-required:")
        for bad in (
            auth_event(signer, "not-the-challenge", strict_relay.url),
            auth_event(signer, challenge, "wss://another.relay.example"),
            auth_event(signer, challenge, strict_relay.url, created_at=int(time.time()) - 3600),
        ):
            await client.send(["AUTH", msgspec.to_builtins(bad)])
            answer = await client.receive()
            assert answer[:3] == ["OK", bad.id, False] and answer[3].startswith("invalid:")
        good = auth_event(signer, challenge, strict_relay.url + "/")
        await client.send(["AUTH", msgspec.to_builtins(good)])
        assert await client.receive() == ["OK", good.id, True, ""]
        assert (await client.publish(note))[2] is True
        # An AUTH event is never stored or broadcast, even sent as EVENT.
        assert (await client.publish(good))[3].startswith("invalid:")


async def test_proof_of_work_is_required(strict_relay: RelayProcess) -> None:
    signer = Signer()
    async with connect(strict_relay.url) as client:
        challenge = (await client.receive())[1]
        event = auth_event(signer, challenge, strict_relay.url)
        await client.send(["AUTH", msgspec.to_builtins(event)])
        await client.receive()
        weak = signer.sign(1, "no work")
        while int(weak.id, 16) >> 248 == 0:  # make sure it really lacks 8 bits
            weak = signer.sign(1, f"no work {time.time()}")
        assert (await client.publish(weak))[3].startswith("pow:")
        low_commitment = signer.sign(1, "x", [["nonce", "1", "4"]])  # commits to 4 < 8 bits
        assert (await client.publish(low_commitment))[3].startswith("pow:")
        assert (await client.publish(mined(signer, 1, "worked", 8)))[2] is True


async def test_protected_events_only_from_their_authenticated_author(
    relay: RelayProcess,
) -> None:
    author, other = Signer(), Signer()
    protected = author.sign(1, "mine only", [["-"]])
    async with connect(relay.url) as client:
        refused = await client.publish(protected)
        assert refused[2] is False and refused[3].startswith("auth-required:")
        # The refusal came with a challenge; authenticate as someone else first.
        async with connect(relay.url) as second:
            challenge = await authenticate(second, other, relay.url)
            wrong = await second.publish(protected)
            assert wrong[2] is False and wrong[3].startswith("restricted:")
            await authenticate(second, author, relay.url, challenge)
            assert (await second.publish(protected))[2] is True


async def test_dm_reads_are_restricted_to_participants(relay: RelayProcess) -> None:
    alice, bob, eve = Signer(), Signer(), Signer()
    dm = alice.sign(4, "ciphertext", [["p", bob.pubkey]])
    async with connect(relay.url) as writer:
        assert (await writer.publish(dm))[2] is True
    async with connect(relay.url) as anonymous:
        await anonymous.send(["REQ", "dms", {"kinds": [4], "#p": [bob.pubkey]}])
        challenge, closed = await anonymous.receive(), await anonymous.receive()
        assert challenge[0] == "AUTH"
        assert closed[:2] == ["CLOSED", "dms"] and closed[2].startswith("auth-required:")
        # Without naming the kind, the DM is filtered out instead.
        assert await anonymous.query("all", {"authors": [alice.pubkey]}) == []
    async with connect(relay.url) as eves:
        await authenticate(eves, eve, relay.url)
        assert await eves.query("peek", {"kinds": [4], "authors": [alice.pubkey]}) == []
    async with connect(relay.url) as bobs, connect(relay.url) as alices:
        await authenticate(bobs, bob, relay.url)
        got = await bobs.query("mine", {"kinds": [4], "#p": [bob.pubkey]})
        assert [e["id"] for e in got] == [dm.id]
        # Live: Bob receives the next DM, an unauthenticated subscriber does not.
        await bobs.send(["REQ", "live", {"kinds": [4], "authors": [alice.pubkey]}])
        stored, _ = await bobs.receive_until(lambda m: m == ["EOSE", "live"])
        assert [m[2]["id"] for m in stored] == [dm.id]
        async with connect(relay.url) as lurker:
            await lurker.send(["REQ", "lurk", {"authors": [alice.pubkey]}])
            assert await lurker.receive() == ["EOSE", "lurk"]
            second = alice.sign(4, "more ciphertext", [["p", bob.pubkey]])
            assert (await alices.publish(second))[2] is True
            assert (await bobs.receive())[2]["id"] == second.id
            await lurker.expect_silence(0.5)


async def test_counts_of_dms_are_screened_like_reqs(relay: RelayProcess) -> None:
    """COUNT must not reveal how often two other people exchanged DMs."""
    alice, bob, carol = Signer(), Signer(), Signer()
    dms = [alice.sign(4, f"ciphertext {i}", [["p", bob.pubkey]]) for i in range(3)]
    note = alice.sign(1, "public note")
    async with connect(relay.url) as writer:
        for event in [*dms, note]:
            assert (await writer.publish(event))[2] is True
    between = {"kinds": [4], "authors": [alice.pubkey], "#p": [bob.pubkey]}

    async def count(client: RelayClient, flt: dict[str, object]) -> object:
        await client.send(["COUNT", "n", flt])
        _, answer = await client.receive_until(lambda m: m[0] in ("COUNT", "CLOSED"))
        return answer[2]["count"] if answer[0] == "COUNT" else answer[0]

    async with connect(relay.url) as carols:
        await authenticate(carols, carol, relay.url)
        assert await count(carols, between) == 0
        assert await count(carols, {"authors": [alice.pubkey]}) == 1  # the note only
    async with connect(relay.url) as anonymous:
        assert await count(anonymous, {"authors": [alice.pubkey]}) == 1
        assert await count(anonymous, between) == "CLOSED"  # auth-required:, as for REQ
    for participant in (alice, bob):
        async with connect(relay.url) as client:
            await authenticate(client, participant, relay.url)
            mine = {"kinds": [4], "authors": [alice.pubkey]} if participant is alice else between
            if participant is bob:
                mine = {"kinds": [4], "#p": [bob.pubkey]}
            assert await count(client, mine) == 3
            assert await count(client, {"authors": [participant.pubkey]}) == (
                4 if participant is alice else 0
            )


async def test_metrics_need_the_token(strict_relay: RelayProcess) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{strict_relay.http_url}/metrics") as response:
            assert response.status == 401
        headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        async with session.get(f"{strict_relay.http_url}/metrics", headers=headers) as response:
            assert response.status == 200 and "relay_ok_total" in await response.text()


async def test_events_and_reqs_are_rate_limited_per_ip_and_pubkey(
    limited_relay: RelayProcess,
) -> None:
    one, two = Signer(), Signer()
    forwarded = {"X-Forwarded-For": "198.51.100.7"}  # we are a trusted proxy (127.0.0.1)
    async with connect(limited_relay.url, headers=forwarded) as client:
        answers = [await client.publish(one.sign(1, f"n{i}")) for i in range(5)]
        assert [a[2] for a in answers] == [True] * 4 + [False]
        assert answers[4][3].startswith("rate-limited:") and "pubkey" in answers[4][3]
        # Every EVENT counts against the address (5 so far): one more fits in its 6 a minute.
        answers = [await client.publish(two.sign(1, f"m{i}")) for i in range(2)]
        assert [a[2] for a in answers] == [True, False]
        assert "address" in answers[1][3]
        replies = []
        for i in range(6):
            await client.send(["COUNT", f"c{i}", {"authors": [one.pubkey]}])
            replies.append(await client.receive())
        assert [r[0] for r in replies] == ["COUNT"] * 5 + ["CLOSED"]
        assert replies[5][2].startswith("rate-limited:")
    # Another client address has its own budget.
    async with connect(limited_relay.url, headers={"X-Forwarded-For": "198.51.100.8"}) as other:
        assert (await other.publish(Signer().sign(1, "fresh budget")))[2] is True


async def test_connections_per_ip_are_limited_cluster_wide(limited_relay: RelayProcess) -> None:
    headers = {"X-Forwarded-For": "203.0.113.9"}
    async with aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(limited_relay.url, headers=headers) for _ in range(3)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(limited_relay.url, headers=headers)
        assert refused.value.status == 429
        await sockets[0].close()
        await asyncio.sleep(0.3)
        again = await session.ws_connect(limited_relay.url, headers=headers)
        for ws in [*sockets[1:], again]:
            await ws.close()


async def test_forwarded_for_is_ignored_from_untrusted_peers() -> None:
    trusted = ["127.0.0.1/32"]
    assert client_ip("127.0.0.1", "198.51.100.7", trusted) == "198.51.100.7"
    assert client_ip("192.0.2.1", "198.51.100.7", trusted) == "192.0.2.1"


async def test_nip11_reflects_access_settings(strict_relay: RelayProcess) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(strict_relay.http_url, headers={"Accept": "application/nostr+json"}) as resp,
    ):
        document = await resp.json(content_type=None)
    assert {42, 13, 70} <= set(document["supported_nips"])
    assert document["limitation"]["auth_required"] is True
    assert document["limitation"]["min_pow_difficulty"] == 8
    assert document["limitation"]["restricted_writes"] is True
