"""Paid events end to end: real relay processes, a real ledger process, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import msgspec
import psycopg
import pytest

from cluster.nostr.event import Event
from cluster.nostr.signing import Signer
from cluster.payments.claims import payment_tag, sender_pubkey_of
from cluster.payments.dassie import DassieClient
from cluster.payments.model import ChannelState
from cluster.services.redis import RedisServer
from tests.client import connect
from tests.services import LEDGER_TOKEN as TOKEN
from tests.services import LedgerProcess, RelayProcess, RelayStarter, record

# /metrics is never public (issue 13): the paid relay's scrapes carry its token.
METRICS_TOKEN = "p" * 40
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}

PRICED_KIND, PRICE = 4000, 10
ARTICLE_KIND, ARTICLE_PRICE = 30078, 25
PRICING = f"{PRICED_KIND}:{PRICE},{ARTICLE_KIND}:{ARTICLE_PRICE}"


def paid_env(ledger: LedgerProcess, **extra: str) -> dict[str, str]:
    return {
        "DASSIE_RPC_URL": ledger.url,
        "DASSIE_RPC_TOKEN": ledger.token,
        "RELAY_PRICING": PRICING,
        "RELAY_DASSIE__RESET_AFTER": "2",
        "RELAY_DASSIE__TIMEOUT": "2",
        **extra,
    }


@pytest.fixture(scope="module")
def paid_relay(
    relay_env: dict[str, str], ledger: LedgerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RelayProcess]:
    starter = RelayStarter(relay_env, tmp_path_factory.mktemp("paid-relay"))
    try:
        yield starter.start(
            workers=2, RELAY_NETWORK__METRICS_TOKEN=METRICS_TOKEN, **paid_env(ledger)
        )
    finally:
        starter.stop_all()


@pytest.fixture
async def node(ledger: LedgerProcess) -> AsyncIterator[DassieClient]:
    async with DassieClient(ledger.url, TOKEN, timeout=5) as client:
        yield client


class Payer:
    """A Nostr identity that is also a channel's sender, signing claims with the same key."""

    def __init__(self) -> None:
        self.signer = Signer()
        self.secret = self.signer.secret

    async def open(
        self,
        node: DassieClient,
        capacity: int = 1000,
        currency: str = "BTC",
        expires_in: int = 3600,
    ) -> ChannelState:
        return await node.open_channel(
            sender_pubkey_of(self.secret), capacity, currency, expires_in
        )

    def event(
        self,
        channel: str,
        amount: int,
        nonce: int,
        *,
        kind: int = PRICED_KIND,
        currency: str = "BTC",
        content: str | None = None,
        tags: list[list[str]] | None = None,
    ) -> Event:
        tag = payment_tag(self.secret, channel, amount, nonce, currency)
        return self.signer.sign(
            kind, content or f"paid {nonce} {secrets.token_hex(4)}", [*(tags or []), tag]
        )


async def spent_on(database_url: str, channel_id: str) -> tuple[int, int, int]:
    """(spent, highest_nonce, claims) in the relay's own accounting."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cursor = await conn.execute(
            "SELECT c.spent, c.highest_nonce, (SELECT count(*) FROM payment_claims k"
            " WHERE k.channel_id = c.channel_id) FROM payment_channels c WHERE channel_id = %s",
            (channel_id,),
        )
        row = await cursor.fetchone()
    return (0, -1, 0) if row is None else (row[0], row[1], row[2])


async def ledger_claims(database_url: str, channel_id: str) -> list[tuple[int, int]]:
    """(nonce, amount) of every claim the ledger node recorded for the channel."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cursor = await conn.execute(
            "SELECT nonce, amount FROM ledger.claims WHERE channel_id = %s ORDER BY nonce",
            (channel_id,),
        )
        return [(row[0], row[1]) for row in await cursor.fetchall()]


async def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not reached in time")
        await asyncio.sleep(0.1)


# ---- acceptance and refusals -------------------------------------------------------------------


async def test_unpaid_priced_kind_is_refused_and_free_kind_is_not(paid_relay: RelayProcess) -> None:
    signer = Signer()
    async with connect(paid_relay.url) as client:
        unpaid = signer.sign(PRICED_KIND, "no payment")
        assert await client.publish(unpaid) == [
            "OK",
            unpaid.id,
            False,
            f"restricted: payment required: kind {PRICED_KIND} costs {PRICE} sats",
        ]
        free = signer.sign(1, "free")
        assert await client.publish(free) == ["OK", free.id, True, ""]
        assert await client.query("u", {"ids": [unpaid.id]}) == []


async def test_paid_event_is_stored_delivered_charged_and_forwarded(
    paid_relay: RelayProcess, node: DassieClient, database_url: str
) -> None:
    payer = Payer()
    channel = await payer.open(node, capacity=100)
    event = payer.event(channel.channel_id, PRICE, 1)
    async with connect(paid_relay.url) as subscriber, connect(paid_relay.url) as publisher:
        await subscriber.send(
            ["REQ", "paid", {"kinds": [PRICED_KIND], "authors": [payer.signer.pubkey]}]
        )
        assert await subscriber.receive() == ["EOSE", "paid"]
        assert await publisher.publish(event) == ["OK", event.id, True, ""]
        delivered = await subscriber.receive()
        assert delivered[:2] == ["EVENT", "paid"] and delivered[2]["id"] == event.id
        assert len(await publisher.query("q", {"ids": [event.id]})) == 1
        # The same event again: a duplicate, never charged twice.
        duplicate = await publisher.publish(event)
        assert duplicate[2] is True and duplicate[3].startswith("duplicate:")
    assert await spent_on(database_url, channel.channel_id) == (PRICE, 1, 1)

    async def forwarded() -> bool:
        return await ledger_claims(database_url, channel.channel_id) == [(1, PRICE)]

    await wait_for(forwarded)
    assert await node.get_balance(f"channel/{channel.channel_id}") == 100 - PRICE


async def test_article_price_and_payment_tag_at_any_position(
    paid_relay: RelayProcess, node: DassieClient
) -> None:
    payer = Payer()
    channel = await payer.open(node)
    tag = payment_tag(payer.secret, channel.channel_id, ARTICLE_PRICE, 7, "BTC")
    article = payer.signer.sign(ARTICLE_KIND, "long form", [["d", "a"], tag, ["t", "x"]])
    async with connect(paid_relay.url) as client:
        assert (await client.publish(article))[2] is True
        cheap = payer.event(channel.channel_id, PRICE, 8, kind=ARTICLE_KIND, tags=[["d", "b"]])
        assert (await client.publish(cheap))[
            3
        ] == "restricted: invalid payment: insufficient_amount"


def _reason(ok: list[Any]) -> str:
    assert ok[0] == "OK" and ok[2] is False, ok
    prefix = "restricted: invalid payment: "
    assert ok[3].startswith(prefix), ok
    return str(ok[3][len(prefix) :])


async def test_every_rejection_reason(
    paid_relay: RelayProcess, node: DassieClient, database_url: str
) -> None:
    payer, stranger = Payer(), Payer()
    channel = (await payer.open(node, capacity=30)).channel_id
    closed = (await payer.open(node)).channel_id
    await node.close_channel(closed)
    expired = (await payer.open(node, expires_in=1)).channel_id
    await asyncio.sleep(1.2)
    signer = payer.signer
    good = payment_tag(payer.secret, channel, PRICE, 1, "BTC")
    cases: dict[str, Event] = {
        "malformed_tag": signer.sign(PRICED_KIND, "arity", [good[:6]]),
        "malformed_tag ": signer.sign(PRICED_KIND, "two tags", [good, good]),
        "malformed_tag  ": signer.sign(
            PRICED_KIND, "leading zero", [[*good[:3], "010", *good[4:]]]
        ),
        "unknown_channel": payer.event("btc:nosuchchannel", PRICE, 1),
        "channel_closed": payer.event(closed, PRICE, 1),
        "channel_expired": payer.event(expired, PRICE, 1),
        "currency_mismatch": payer.event(channel, PRICE, 1, currency="AKT"),
        # Signed by its author, but the author is not the channel's sender (rule 3).
        "invalid_signature": stranger.signer.sign(
            PRICED_KIND, "forged", [payment_tag(stranger.secret, channel, PRICE, 1, "BTC")]
        ),
        # Binding on: a claim not signed by the event's own author cannot be bound to it, and
        # is refused before the channel is looked up.
        "claim_not_bound ": signer.sign(
            PRICED_KIND, "not my claim", [payment_tag(stranger.secret, channel, PRICE, 1, "BTC")]
        ),
        "insufficient_amount": payer.event(channel, PRICE - 1, 1),
        # Rule 7: the payer's own valid claim, copied into a stranger's event.
        "claim_not_bound": stranger.signer.sign(PRICED_KIND, "stolen", [good]),
    }
    async with connect(paid_relay.url) as client:
        for expected, event in cases.items():
            assert _reason(await client.publish(event)) == expected.strip(), expected
        assert (await client.publish(payer.event(channel, PRICE, 5)))[2] is True
        assert _reason(await client.publish(payer.event(channel, PRICE, 5))) == "stale_nonce"
        assert _reason(await client.publish(payer.event(channel, PRICE, 4))) == "stale_nonce"
        assert (await client.publish(payer.event(channel, 20, 6)))[2] is True  # spent 30 of 30
        over = payer.event(channel, PRICE, 7)
        assert _reason(await client.publish(over)) == "insufficient_balance"
        refused = [event.id for event in cases.values()] + [over.id]
        assert await client.query("none", {"ids": refused}) == []
    assert await spent_on(database_url, channel) == (30, 6, 2)


async def test_cached_insufficient_balance_is_refreshed_once(
    paid_relay: RelayProcess, node: DassieClient, database_url: str
) -> None:
    payer = Payer()
    channel = (await payer.open(node, capacity=PRICE)).channel_id
    async with connect(paid_relay.url) as client:
        assert (await client.publish(payer.event(channel, PRICE, 1)))[2] is True
        # A top-up at the node (the ledger has no top-up procedure: change its table).
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await conn.execute(
                "UPDATE ledger.channels SET capacity = 100 WHERE channel_id = %s", (channel,)
            )
        assert (await client.publish(payer.event(channel, PRICE, 2)))[2] is True
    assert await spent_on(database_url, channel) == (2 * PRICE, 2, 2)


async def test_nip11_advertises_fees(paid_relay: RelayProcess) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(paid_relay.http_url, headers={"Accept": "application/nostr+json"}) as response,
    ):
        document = await response.json(content_type=None)
    assert document["limitation"]["payment_required"] is True
    fees = {tuple(fee["kinds"]): fee for fee in document["fees"]["publication"]}
    assert fees[(PRICED_KIND,)] == {"amount": PRICE, "unit": "sats", "kinds": [PRICED_KIND]}
    assert fees[(ARTICLE_KIND,)]["amount"] == ARTICLE_PRICE


async def test_verification_histogram_is_exported(paid_relay: RelayProcess) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{paid_relay.http_url}/metrics", headers=METRICS_AUTH) as response,
    ):
        text = await response.text()
    count = next(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("relay_payment_verification_seconds_count")
    )
    assert count > 0
    assert "relay_event_acceptance_seconds_bucket" in text


async def scrape(relay: RelayProcess) -> dict[str, float]:
    """GET /metrics (aggregated over the instance's workers) as {sample with labels: value}."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{relay.http_url}/metrics", headers=METRICS_AUTH) as response,
    ):
        text = await response.text()
    samples = (line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    return {name: float(value) for name, value in samples}


async def test_payment_metrics_move(
    paid_relay: RelayProcess, node: DassieClient, database_url: str
) -> None:
    payer = Payer()
    channel = (await payer.open(node)).channel_id
    before = await scrape(paid_relay)
    async with connect(paid_relay.url) as client:
        assert (await client.publish(payer.event(channel, PRICE, 1)))[2] is True

    async def forwarded() -> bool:
        return await ledger_claims(database_url, channel) == [(1, PRICE)]

    await wait_for(forwarded)

    async def counted() -> bool:  # the acknowledging worker counts just after the node answers
        return (await scrape(paid_relay)).get("relay_outbox_forwarded_total", 0) > before.get(
            "relay_outbox_forwarded_total", 0
        )

    await wait_for(counted)
    after = await scrape(paid_relay)

    def grew(name: str) -> bool:
        return after.get(name, 0) > before.get(name, 0)

    # A channel nobody has seen: L1 and L2 miss, the node answers.
    assert grew('relay_channel_cache_total{level="l1",result="miss"}')
    assert grew('relay_channel_cache_total{level="l2",result="miss"}')
    assert grew('relay_channel_cache_total{level="l3",result="hit"}')
    assert grew('relay_dassie_calls_total{method="payment.getChannelState"}')
    assert grew('relay_dassie_calls_total{method="payment.recordClaim"}')
    assert after["relay_dassie_breaker_state"] == 0.0


# ---- exactly once, across workers and instances ------------------------------------------------


async def test_same_claim_through_two_instances_is_accepted_once_per_round(
    paid_relay: RelayProcess,
    start_relay: RelayStarter,
    ledger: LedgerProcess,
    node: DassieClient,
    database_url: str,
) -> None:
    second = start_relay.start(workers=2, **paid_env(ledger))
    payer = Payer()
    channel = (await payer.open(node, capacity=10_000)).channel_id
    async with aiohttp.ClientSession() as session:
        sockets = [
            await session.ws_connect(relay.url) for relay in (paid_relay, second) for _ in range(4)
        ]
        accepted_rounds = 0
        for round_number in range(1, 51):
            events = [payer.event(channel, PRICE, round_number) for _ in sockets]
            await asyncio.gather(
                *(
                    ws.send_json(["EVENT", msgspec.to_builtins(event)])
                    for ws, event in zip(sockets, events, strict=True)
                )
            )
            answers = [await ws.receive_json(timeout=10) for ws in sockets]
            winners = [a for a in answers if a[2] is True]
            assert len(winners) == 1, answers
            assert all(
                a[3] == "restricted: invalid payment: stale_nonce" for a in answers if not a[2]
            )
            accepted_rounds += 1
        for ws in sockets:
            await ws.close()
    assert accepted_rounds == 50
    assert await spent_on(database_url, channel) == (50 * PRICE, 50, 50)


async def test_thousand_claims_from_four_connections(
    paid_relay: RelayProcess, node: DassieClient, database_url: str
) -> None:
    payer = Payer()
    capacity = 5000
    channel = (await payer.open(node, capacity=capacity)).channel_id
    events = [payer.event(channel, PRICE, nonce) for nonce in range(1, 1001)]

    async def send_share(share: list[Event]) -> list[tuple[int, bool]]:
        async with connect(paid_relay.url) as client:
            for event in share:
                await client.send(["EVENT", msgspec.to_builtins(event)])
            by_id = {event.id: int(event.tags[-1][4]) for event in share}
            results: list[tuple[int, bool]] = []
            while len(results) < len(share):
                message = await client.receive()
                if message[0] == "OK":
                    results.append((by_id[message[1]], bool(message[2])))
            return results

    shares = await asyncio.gather(*(send_share(events[i::4]) for i in range(4)))
    accepted = sorted(nonce for share in shares for nonce, ok in share if ok)
    assert len(accepted) == len(set(accepted)) > 0
    spent, highest, claims = await spent_on(database_url, channel)
    assert spent == PRICE * len(accepted) <= capacity
    assert claims == len(accepted) and highest == accepted[-1]

    async def all_forwarded() -> bool:
        return len(await ledger_claims(database_url, channel)) == len(accepted)

    await wait_for(all_forwarded, timeout=60)
    assert [nonce for nonce, _ in await ledger_claims(database_url, channel)] == accepted


# ---- faults: the ledger and Redis --------------------------------------------------------------


@pytest.fixture
def fault_relay(
    start_relay: RelayStarter, own_ledger: LedgerProcess, own_redis: RedisServer
) -> RelayProcess:
    return start_relay.start(workers=1, **paid_env(own_ledger, REDIS_URL=own_redis.url()))


async def test_ledger_outage_fails_closed_for_new_channels_and_outbox_drains_exactly_once(
    fault_relay: RelayProcess, own_ledger: LedgerProcess, database_url: str
) -> None:
    payer = Payer()
    async with DassieClient(own_ledger.url, TOKEN, timeout=5) as admin:
        known = (await payer.open(admin, capacity=1000)).channel_id
        unseen = (await payer.open(admin, capacity=1000)).channel_id
    accepted: list[int] = []
    async with connect(fault_relay.url) as client:
        assert (await client.publish(payer.event(known, PRICE, 1)))[2] is True  # caches state
        accepted.append(1)
        own_ledger.kill()
        for nonce in range(2, 12):  # accepted on the cached state, forwarded later
            assert (await client.publish(payer.event(known, PRICE, nonce)))[2] is True
            accepted.append(nonce)
        ok = await client.publish(payer.event(unseen, PRICE, 1))
        assert ok[2:] == [False, "error: payment verification unavailable, retry later"]
        free = payer.signer.sign(1, "free during the outage")
        assert (await client.publish(free))[2] is True
        own_ledger.start()

        async def drained() -> bool:
            return len(await ledger_claims(database_url, known)) == len(accepted)

        await wait_for(drained, timeout=60)
        recorded = [nonce for nonce, _ in await ledger_claims(database_url, known)]
        assert recorded == accepted
        record(
            "ledger killed while claims are accepted",
            claims_accepted=len(accepted),
            recorded_by_ledger=len(recorded),
            recorded_twice=len(recorded) - len(set(recorded)),
            lost=len(set(accepted) - set(recorded)),
        )
        assert (await client.publish(payer.event(unseen, PRICE, 1)))[2] is True  # node is back


async def test_redis_down_verification_continues_on_the_node(
    fault_relay: RelayProcess, own_ledger: LedgerProcess, own_redis: RedisServer
) -> None:
    payer = Payer()
    async with DassieClient(own_ledger.url, TOKEN, timeout=5) as admin:
        channel = (await payer.open(admin)).channel_id
    own_redis.kill()
    async with connect(fault_relay.url) as client:
        started = time.monotonic()
        assert (await client.publish(payer.event(channel, PRICE, 1)))[2] is True
        assert time.monotonic() - started < 5
        assert (await client.publish(payer.event(channel, PRICE, 2)))[2] is True
