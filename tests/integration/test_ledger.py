"""The ledger node as a real process, driven by DassieClient: channels, claims, auth and faults."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import msgspec
import psycopg
import pytest

from cluster.ledger.store import apply_ledger_migrations
from cluster.payments.claims import sender_pubkey_of, sign_claim
from cluster.payments.dassie import (
    BreakerState,
    ClaimVerification,
    DassieAuthError,
    DassieClient,
    DassieError,
    DassieUnavailable,
)
from cluster.payments.model import ChannelState, ChannelStatus, Currency, PaymentReason
from cluster.services.ports import free_port
from tests.services import LEDGER_TOKEN as TOKEN
from tests.services import LedgerProcess

SENDER = "7f" * 32
OTHER = "3c" * 32
EVENT_ID = "ab" * 32


@pytest.fixture
async def client(ledger: LedgerProcess) -> AsyncIterator[DassieClient]:
    dassie = DassieClient(ledger.url, TOKEN, timeout=5.0)
    try:
        yield dassie
    finally:
        await dassie.close()


async def open_btc(
    client: DassieClient, capacity: int = 1000, expires_in: int = 30 * 24 * 3600
) -> ChannelState:
    return await client.open_channel(sender_pubkey_of(SENDER), capacity, Currency.BTC, expires_in)


async def verify(
    client: DassieClient,
    channel_id: str,
    amount: int,
    nonce: int,
    *,
    key: str = SENDER,
    currency: Currency = Currency.BTC,
) -> ClaimVerification:
    signature = sign_claim(key, channel_id, amount, nonce)
    return await client.verify_payment_claim(channel_id, amount, nonce, signature, currency)


# -- channels and claims ---------------------------------------------------------------------


async def test_open_channel_and_read_its_state(client: DassieClient) -> None:
    capacity = 2**60 + 7  # beyond a JavaScript number: only exact as a superjson bigint
    opened = await open_btc(client, capacity, expires_in=3600)
    assert re.fullmatch(r"btc:[0-9a-f]{24}", opened.channel_id)
    assert opened.capacity == opened.balance == capacity
    assert opened.highest_nonce == -1
    assert opened.status is ChannelStatus.OPEN
    assert opened.sender_pubkey == sender_pubkey_of(SENDER)
    assert 3590 < opened.expiration - time.time() <= 3600
    assert await client.get_channel_state(opened.channel_id) == opened


async def test_unknown_channel_is_none(client: DassieClient) -> None:
    assert await client.get_channel_state("btc:000000000000000000000000") is None


async def test_wire_messages_are_superjson_with_bigints(ledger: LedgerProcess) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(ledger.url, headers={"Authorization": f"Bearer {TOKEN}"}) as ws,
    ):
        request = {
            "protocol": "dassie-rpc-01",
            "type": "request",
            "routeType": "mutation",
            "id": "open-1",
            "path": ["settlement", "openChannel"],
            "input": {"senderPubkey": sender_pubkey_of(SENDER), "capacity": 5, "currency": "XRP"},
        }
        await ws.send_str(msgspec.json.encode({"json": request}).decode())
        message = await ws.receive(timeout=5)
    assert message.type is aiohttp.WSMsgType.TEXT
    payload = msgspec.json.decode(message.data)
    assert payload["json"]["id"] == "open-1"
    assert payload["json"]["result"]["data"]["capacity"] == "5"
    assert payload["meta"]["values"] == {
        "result.data.capacity": ["bigint"],
        "result.data.balance": ["bigint"],
    }


async def test_verify_valid_claims(client: DassieClient) -> None:
    channel = await open_btc(client)
    assert await verify(client, channel.channel_id, 10, 0) == ClaimVerification(valid=True)
    # A 130-character signature (r||s||recovery byte) is accepted too; the last byte is ignored.
    signature = sign_claim(SENDER, channel.channel_id, 1000, 7) + "01"
    verdict = await client.verify_payment_claim(channel.channel_id, 1000, 7, signature, "BTC")
    assert verdict.valid


async def test_verify_refuses_with_every_node_reason(client: DassieClient) -> None:
    channel = await open_btc(client, capacity=100)
    cid = channel.channel_id

    async def reason(amount: int, nonce: int, **kwargs: object) -> PaymentReason | None:
        verdict = await verify(client, cid, amount, nonce, **kwargs)  # type: ignore[arg-type]
        assert verdict.valid is (verdict.error is None)
        return verdict.error

    assert (await verify(client, "btc:ffffffffffffffffffffffff", 1, 1)).error is (
        PaymentReason.UNKNOWN_CHANNEL
    )
    assert await reason(5, 1, key=OTHER) is PaymentReason.INVALID_SIGNATURE
    assert await reason(5, 1, currency=Currency.BASE) is PaymentReason.CURRENCY_MISMATCH
    assert await reason(101, 1) is PaymentReason.INSUFFICIENT_BALANCE
    tampered = sign_claim(SENDER, cid, 5, 1)
    assert (await client.verify_payment_claim(cid, 6, 1, tampered, "BTC")).error is (
        PaymentReason.INVALID_SIGNATURE
    )
    await client.record_claim(cid, 60, 5, EVENT_ID)
    assert await reason(5, 5) is PaymentReason.STALE_NONCE
    assert await reason(5, 4) is PaymentReason.STALE_NONCE
    assert await reason(41, 6) is PaymentReason.INSUFFICIENT_BALANCE
    assert await reason(40, 6) is None
    await client.close_channel(cid)
    assert await reason(1, 6) is PaymentReason.CHANNEL_CLOSED


async def test_verify_refuses_expired_channel(client: DassieClient) -> None:
    channel = await open_btc(client, expires_in=1)
    deadline = time.monotonic() + 5
    while time.time() < channel.expiration and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert (await verify(client, channel.channel_id, 1, 1)).error is PaymentReason.CHANNEL_EXPIRED
    state = await client.get_channel_state(channel.channel_id)
    assert state is not None and state.status is ChannelStatus.EXPIRED


async def test_record_claim_is_idempotent_and_spends_once(client: DassieClient) -> None:
    channel = await open_btc(client, capacity=1000)
    cid = channel.channel_id
    received_before = await client.get_balance("relay/received")
    first = await client.record_claim(cid, 30, 1, EVENT_ID)
    again = await client.record_claim(cid, 30, 1, EVENT_ID)
    assert first["duplicate"] is False and again["duplicate"] is True
    assert {k: v for k, v in first.items() if k != "duplicate"} == {
        k: v for k, v in again.items() if k != "duplicate"
    }
    assert first["amount"] == 30 and first["nonce"] == 1 and first["eventId"] == EVENT_ID
    state = await client.get_channel_state(cid)
    assert state is not None and state.balance == 970 and state.highest_nonce == 1
    assert await client.get_balance(f"channel/{cid}") == 970
    assert await client.get_balance(f"channel/{cid}/spent") == 30
    assert await client.get_balance("relay/received") == received_before + 30
    # Outboxes of different workers may deliver out of order: a lower nonce is still recorded.
    await client.record_claim(cid, 20, 0, "cd" * 32)
    state = await client.get_channel_state(cid)
    assert state is not None and state.balance == 950 and state.highest_nonce == 1
    with pytest.raises(DassieError) as conflict:
        await client.record_claim(cid, 31, 1, EVENT_ID)
    assert conflict.value.code == "nonce_conflict"


async def test_concurrent_replays_record_once(client: DassieClient) -> None:
    channel = await open_btc(client, capacity=100)
    results = await asyncio.gather(
        *(client.record_claim(channel.channel_id, 10, 3, EVENT_ID) for _ in range(20))
    )
    assert sorted(result["duplicate"] for result in results) == [False] + [True] * 19
    assert await client.get_balance(f"channel/{channel.channel_id}") == 90


async def test_record_claim_beyond_capacity_is_refused(client: DassieClient) -> None:
    channel = await open_btc(client, capacity=50)
    await client.record_claim(channel.channel_id, 40, 1, EVENT_ID)
    with pytest.raises(DassieError) as refused:
        await client.record_claim(channel.channel_id, 11, 2, EVENT_ID)
    assert refused.value.code == PaymentReason.INSUFFICIENT_BALANCE
    assert await client.get_balance(f"channel/{channel.channel_id}") == 10
    with pytest.raises(DassieError) as unknown:
        await client.record_claim("btc:aaaaaaaaaaaaaaaaaaaaaaaa", 1, 1, EVENT_ID)
    assert unknown.value.code == PaymentReason.UNKNOWN_CHANNEL


async def test_close_channel(client: DassieClient) -> None:
    channel = await open_btc(client)
    closed = await client.close_channel(channel.channel_id)
    assert closed.status is ChannelStatus.CLOSED
    assert closed.balance == channel.balance
    assert await client.close_channel(channel.channel_id) == closed
    state = await client.get_channel_state(channel.channel_id)
    assert state is not None and state.status is ChannelStatus.CLOSED
    with pytest.raises(DassieError) as unknown:
        await client.close_channel("btc:aaaaaaaaaaaaaaaaaaaaaaaa")
    assert unknown.value.code == PaymentReason.UNKNOWN_CHANNEL


async def test_open_channel_variants(client: DassieClient) -> None:
    base = await client.mutation(
        ("settlement", "openChannel"),
        {
            "senderPubkey": sender_pubkey_of(SENDER).upper(),
            "capacity": 5,
            "blockchain": "BASE",
            "sender": "0x9f2d1c3b4a5e6f708192a3b4c5d6e7f809112233",
            "recipient": "0x1111111111111111111111111111111111111111",
        },
    )
    assert base["channelId"].startswith("base:") and base["blockchain"] == "BASE"
    assert base["sender"] == "0x9f2d1c3b4a5e6f708192a3b4c5d6e7f809112233"
    assert base["senderPubkey"] == sender_pubkey_of(SENDER)
    assert 29 * 86400 < base["expiration"] - time.time() <= 30 * 86400


@pytest.mark.parametrize(
    ("path", "input", "fragment"),
    [
        (("payment", "getChannelState"), {}, "channelId"),
        (("payment", "getChannelState"), {"channelId": "bad id!"}, "$.channelId"),
        (("payment", "getChannelState"), None, "object"),
        (("payment", "getChannelState"), {"channelId": "x", "extra": 1}, "extra"),
        (("ledger", "getBalance"), {"accountPath": "nowhere"}, "unknown_account"),
        (("ledger", "getBalance"), {"accountPath": "channel/btc:nope"}, "unknown_channel"),
        (("payment", "verifyPaymentClaim"), {"channelId": "x"}, "invalid_input"),
        (("nope", "nothing"), {}, "unknown_procedure: nope.nothing"),
        (("payment", "recordClaim"), {}, "invalid_route_type"),
    ],
)
async def test_bad_queries_answer_what_is_wrong(
    client: DassieClient, path: tuple[str, ...], input: object, fragment: str
) -> None:
    with pytest.raises(DassieError) as error:
        await client.query(path, input)
    assert fragment in error.value.message


@pytest.mark.parametrize(
    ("input", "fragment"),
    [
        ({"senderPubkey": "02" + "00" * 32, "capacity": 5, "currency": "BTC"}, "senderPubkey"),
        ({"senderPubkey": sender_pubkey_of(SENDER), "capacity": 0, "currency": "BTC"}, "capacity"),
        ({"senderPubkey": sender_pubkey_of(SENDER), "capacity": 5}, "currency"),
        ({"senderPubkey": sender_pubkey_of(SENDER), "capacity": 5, "currency": "DOGE"}, "currency"),
        (
            {"senderPubkey": sender_pubkey_of(SENDER), "capacity": 5, "currency": "BTC",
             "blockchain": "XRP"},
            "differ",
        ),
        (
            {"senderPubkey": sender_pubkey_of(SENDER), "capacity": 5, "currency": "BTC",
             "expiresIn": 0},
            "expiresIn",
        ),
    ],
)  # fmt: skip
async def test_open_channel_input_is_validated(
    client: DassieClient, input: dict[str, object], fragment: str
) -> None:
    with pytest.raises(DassieError) as error:
        await client.mutation(("settlement", "openChannel"), input)
    assert error.value.code == "invalid_input" and fragment in error.value.message


async def test_node_errors_do_not_trip_the_breaker(ledger: LedgerProcess) -> None:
    async with DassieClient(ledger.url, TOKEN, failure_threshold=2) as dassie:
        for _ in range(5):
            with pytest.raises(DassieError):
                await dassie.query(("no", "such"), {})
        assert dassie.breaker_state is BreakerState.CLOSED
        assert dassie.errors_total == 5 and dassie.failures_total == 0


async def test_requests_multiplex_over_one_socket(client: DassieClient) -> None:
    channel = await open_btc(client)
    states = await asyncio.gather(
        *(client.get_channel_state(channel.channel_id) for _ in range(100))
    )
    assert all(state == channel for state in states)
    assert client.connects_total == 1
    assert client.stats()["inflight"] == 0


async def test_ledger_lives_in_its_own_schema(ledger: LedgerProcess, database_url: str) -> None:
    assert await apply_ledger_migrations(database_url) == []
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cursor = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'ledger'"
        )
        assert {row[0] for row in await cursor.fetchall()} == {
            "channels",
            "claims",
            "schema_migrations",
        }
        cursor = await conn.execute("SELECT to_regclass('public.schema_migrations')")
        row = await cursor.fetchone()
        assert row is not None and row[0] is not None  # the relay's own version table is intact


# -- authentication and start-up -------------------------------------------------------------


async def test_bad_token_is_refused_with_401(ledger: LedgerProcess) -> None:
    async with DassieClient(ledger.url, "x" * 48) as dassie:
        with pytest.raises(DassieAuthError) as refused:
            await dassie.get_channel_state("btc:abc")
        assert refused.value.status == 401
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{ledger.port}/rpc") as missing,
    ):
        assert missing.status == 401
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DASSIE_RPC_TOKEN": "too-short"}, "DASSIE_RPC_TOKEN must be at least 32 characters"),
        ({"DASSIE_RPC_TOKEN": ""}, "DASSIE_RPC_TOKEN must be at least 32 characters"),
        ({"LEDGER_DATABASE_URL": "", "DATABASE_URL": ""}, "LEDGER_DATABASE_URL"),
    ],
)
def test_start_up_refuses_bad_configuration(
    database_url: str, env: dict[str, str], message: str
) -> None:
    full_env = {
        **os.environ,
        "DASSIE_RPC_TOKEN": TOKEN,
        "LEDGER_DATABASE_URL": database_url,
        **env,
    }
    result = subprocess.run(
        [sys.executable, "-m", "cluster.ledger", "--port", str(free_port())],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr


# -- faults ---------------------------------------------------------------------------------


async def test_hung_node_times_out(own_ledger: LedgerProcess) -> None:
    async with DassieClient(own_ledger.url, TOKEN, timeout=0.5) as dassie:
        channel = await open_btc(dassie)
        own_ledger.freeze()
        started = time.monotonic()
        with pytest.raises(DassieUnavailable, match="did not answer"):
            await dassie.get_channel_state(channel.channel_id)
        assert 0.4 < time.monotonic() - started < 2.0
        own_ledger.thaw()
        assert await dassie.get_channel_state(channel.channel_id) == channel
        assert dassie.connects_total == 1


async def test_in_flight_request_fails_promptly_when_node_dies(own_ledger: LedgerProcess) -> None:
    async with DassieClient(own_ledger.url, TOKEN, timeout=20.0) as dassie:
        channel = await open_btc(dassie)
        own_ledger.freeze()  # the request is sent but never answered
        pending = asyncio.ensure_future(dassie.get_channel_state(channel.channel_id))
        await asyncio.sleep(0.3)
        assert not pending.done() and dassie.inflight == 1
        started = time.monotonic()
        own_ledger.kill()
        with pytest.raises(DassieUnavailable, match="connection to the Dassie node was lost"):
            await asyncio.wait_for(pending, timeout=5.0)
        assert time.monotonic() - started < 3.0
        assert dassie.disconnects_total == 1


async def test_breaker_opens_fails_fast_and_recovers(own_ledger: LedgerProcess) -> None:
    async with DassieClient(
        own_ledger.url, TOKEN, timeout=3.0, failure_threshold=3, reset_after=1.0, max_backoff=0.2
    ) as dassie:
        channel = await open_btc(dassie)
        own_ledger.kill()

        # Each attempt fails quickly (connection refused); the breaker opens after 3 of them.
        deadline = time.monotonic() + 10
        while dassie.breaker_state is not BreakerState.OPEN:
            assert time.monotonic() < deadline, dassie.stats()
            with pytest.raises(DassieUnavailable):
                await dassie.get_channel_state(channel.channel_id)
            await asyncio.sleep(0.05)
        assert dassie.breaker.opened_total == 1

        # Open: refused at once, without touching the network or waiting for the timeout.
        started = time.monotonic()
        for _ in range(20):
            with pytest.raises(DassieUnavailable, match="circuit breaker is open"):
                await dassie.get_channel_state(channel.channel_id)
        assert time.monotonic() - started < 0.1
        assert dassie.rejected_total >= 20

        # Half-open with the node still dead: the single trial fails and the breaker reopens.
        await asyncio.sleep(dassie.breaker.retry_in() + 0.05)
        with pytest.raises(DassieUnavailable, match="cannot connect"):
            await dassie.get_channel_state(channel.channel_id)
        assert dassie.breaker_state is BreakerState.OPEN
        assert dassie.breaker.opened_total == 2

        # The node comes back on the same port: the next trial after reset_after closes it.
        own_ledger.start()
        if dassie.breaker.retry_in() > 0.05:  # start-up may take longer than reset_after
            with pytest.raises(DassieUnavailable, match="circuit breaker is open"):
                await dassie.get_channel_state(channel.channel_id)
        await asyncio.sleep(dassie.breaker.retry_in() + 0.05)
        assert await dassie.get_channel_state(channel.channel_id) == channel
        assert dassie.stats()["breaker_state"] == BreakerState.CLOSED.value
        assert await dassie.get_channel_state(channel.channel_id) == channel
