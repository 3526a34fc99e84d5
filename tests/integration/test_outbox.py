"""The claim outbox against real PostgreSQL and the real ledger node (cluster/payments/outbox.py).

The module has its own database and ledger: forwarders take every due row of the outbox, so
rows left by other modules' relays in the session database would change what is counted here.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg_pool import AsyncConnectionPool

from cluster.payments.claims import sender_pubkey_of
from cluster.payments.dassie import DassieClient
from cluster.payments.model import Currency, PaymentReason
from cluster.payments.outbox import OutboxForwarder, retry_delay
from cluster.services.ports import free_port
from cluster.store.payments import dead_letters
from tests.services import LEDGER_TOKEN as TOKEN
from tests.services import (
    LedgerProcess,
    migrated_database,
    running_ledger,
    unique_name,
)

SENDER = "5e" * 32


@pytest.fixture(scope="module")
async def outbox_db(postgres_server_url: str) -> AsyncIterator[str]:
    async with migrated_database(postgres_server_url, "relay_outbox") as url:
        yield url


@pytest.fixture(scope="module")
def node(outbox_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LedgerProcess]:
    with running_ledger(outbox_db, tmp_path_factory.mktemp("ledger") / "ledger.log") as process:
        yield process


@pytest.fixture
async def db(outbox_db: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """An observer connection on an empty outbox."""
    async with await psycopg.AsyncConnection.connect(outbox_db, autocommit=True) as conn:
        await conn.execute("TRUNCATE payment_outbox, payment_outbox_dead")
        yield conn


@pytest.fixture
async def client(node: LedgerProcess) -> AsyncIterator[DassieClient]:
    async with DassieClient(node.url, TOKEN, timeout=5.0) as dassie:
        yield dassie


class Pools:
    """Pools with their own application_name each, so pg_stat_activity tells their sessions
    apart: a forwarder's RPC may overlap another forwarder's short transaction, never its own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opened: list[tuple[AsyncConnectionPool, str]] = []

    async def pool(self) -> tuple[AsyncConnectionPool, str]:
        application = unique_name("outbox")
        pool = AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=2,
            open=False,
            kwargs={"autocommit": True, "application_name": application},
        )
        await pool.open()
        self.opened.append((pool, application))
        return pool, application


@pytest.fixture
async def pools(outbox_db: str) -> AsyncIterator[Pools]:
    made = Pools(outbox_db)
    try:
        yield made
    finally:
        for pool, _ in made.opened:
            await pool.close()


class Observed:
    """Wraps a node: before each recordClaim, asks PostgreSQL whether an outbox session sits in
    an open transaction (what holding a row lock across the RPC looks like)."""

    def __init__(self, node: DassieClient, watch: psycopg.AsyncConnection[Any], app: str) -> None:
        self.node = node
        self.watch = watch
        self.application = app
        self.calls: list[int] = []
        self.open_transactions: list[int] = []

    async def record_claim(self, channel_id: str, amount: int, nonce: int, event_id: str) -> Any:
        cursor = await self.watch.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
            " AND state LIKE 'idle in transaction%%'",
            (self.application,),
        )
        row = await cursor.fetchone()
        assert row is not None
        self.open_transactions.append(row[0])
        self.calls.append(nonce)
        await asyncio.sleep(0.002)  # long enough for the other forwarder to lease meanwhile
        return await self.node.record_claim(channel_id, amount, nonce, event_id)


class DiesAfterSending:
    """A worker that sends recordClaim, gets the answer lost, and hangs until it is killed."""

    def __init__(self, node: DassieClient) -> None:
        self.node = node
        self.landed: list[int] = []

    async def record_claim(self, channel_id: str, amount: int, nonce: int, event_id: str) -> Any:
        await self.node.record_claim(channel_id, amount, nonce, event_id)
        self.landed.append(nonce)
        await asyncio.Event().wait()


async def open_channel(client: DassieClient, capacity: int = 10_000) -> str:
    return (await client.open_channel(sender_pubkey_of(SENDER), capacity, Currency.BTC)).channel_id


async def enqueue(
    db: psycopg.AsyncConnection[Any], channel: str, nonces: range | list[int], amount: int = 1
) -> None:
    async with db.cursor() as cursor:
        await cursor.executemany(
            "INSERT INTO payment_outbox (channel_id, nonce, amount, event_id)"
            " VALUES (%s, %s, %s, %s)",
            [(channel, nonce, amount, secrets.token_bytes(32)) for nonce in nonces],
        )


async def outbox_rows(db: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
    """(nonce, attempts, acked, last_error, seconds until due) per row."""
    cursor = await db.execute(
        "SELECT nonce, attempts, acked_at IS NOT NULL, last_error,"
        " extract(epoch FROM next_attempt_at - now())::float8 FROM payment_outbox ORDER BY id"
    )
    return list(await cursor.fetchall())


async def ledger_nonces(db: psycopg.AsyncConnection[Any], channel: str) -> list[int]:
    cursor = await db.execute(
        "SELECT nonce FROM ledger.claims WHERE channel_id = %s ORDER BY nonce", (channel,)
    )
    return [row[0] for row in await cursor.fetchall()]


async def wait_until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_two_forwarders_forward_each_row_once_with_no_transaction_open_during_the_rpc(
    db: psycopg.AsyncConnection[Any], client: DassieClient, pools: Pools, outbox_db: str
) -> None:
    channel = await open_channel(client)
    count = 120
    await enqueue(db, channel, range(1, count + 1))
    observers = []
    forwarders = []
    for _ in range(2):
        watch = await psycopg.AsyncConnection.connect(outbox_db, autocommit=True)
        pool, application = await pools.pool()
        observers.append(Observed(client, watch, application))
        forwarders.append(OutboxForwarder(pool, observers[-1], batch=10))
    try:
        for forwarder in forwarders:
            forwarder.start()

        async def drained() -> bool:
            return all(acked for _, _, acked, _, _ in await outbox_rows(db))

        await wait_until(drained)
    finally:
        for forwarder, observer in zip(forwarders, observers, strict=True):
            await forwarder.close()
            await observer.watch.close()
    calls = [nonce for observer in observers for nonce in observer.calls]
    assert sorted(calls) == list(range(1, count + 1))  # no row sent twice, none skipped
    assert all(observer.calls for observer in observers)  # both forwarders took part
    assert forwarders[0].forwarded + forwarders[1].forwarded == count
    assert set(o for observer in observers for o in observer.open_transactions) == {0}
    assert await ledger_nonces(db, channel) == list(range(1, count + 1))
    assert {attempts for _, attempts, _, _, _ in await outbox_rows(db)} == {1}
    assert await client.get_balance(f"channel/{channel}/spent") == count


async def test_a_worker_dying_mid_rpc_leaves_a_lease_that_expires_then_the_row_is_sent_again(
    db: psycopg.AsyncConnection[Any], client: DassieClient, pools: Pools
) -> None:
    channel = await open_channel(client)
    await enqueue(db, channel, [1, 2], amount=7)
    dying = DiesAfterSending(client)
    doomed = asyncio.create_task(
        OutboxForwarder((await pools.pool())[0], dying, lease=2.0).forward_once()
    )

    async def landed() -> bool:
        return dying.landed == [1]

    await wait_until(landed, timeout=10)
    doomed.cancel()  # the worker dies after the node recorded nonce 1, before the outbox knew
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert [row[:3] for row in await outbox_rows(db)] == [(1, 0, False), (2, 0, False)]
    assert all(0 < until <= 2.0 for *_, until in await outbox_rows(db))  # still leased

    pool, application = await pools.pool()
    survivor_node = Observed(client, db, application)
    survivor = OutboxForwarder(pool, survivor_node, lease=2.0)
    assert await survivor.forward_once() == 0  # leased rows are not forwarded by anyone else
    assert survivor_node.calls == []

    async def forwarded_both() -> bool:
        await survivor.forward_once()
        return survivor.forwarded == 2

    await wait_until(forwarded_both, timeout=10)
    assert survivor_node.calls == [1, 2]
    assert await ledger_nonces(db, channel) == [1, 2]  # nonce 1 recorded once, not twice
    assert await client.get_balance(f"channel/{channel}/spent") == 14
    assert [row[:4] for row in await outbox_rows(db)] == [(1, 1, True, None), (2, 1, True, None)]


async def test_a_refused_claim_is_dead_lettered_and_never_retried(
    db: psycopg.AsyncConnection[Any], client: DassieClient, pools: Pools
) -> None:
    channel = await open_channel(client, capacity=10)
    unknown = "btc:" + secrets.token_hex(12)
    await enqueue(db, channel, [1], amount=5)  # accepted
    await enqueue(db, channel, [2], amount=50)  # more than the channel holds: refused
    await enqueue(db, unknown, [1])  # a channel the node does not know: refused
    before = REGISTRY.get_sample_value("relay_outbox_dead_letters_total") or 0.0
    pool, application = await pools.pool()
    node = Observed(client, db, application)
    forwarder = OutboxForwarder(pool, node)
    assert await forwarder.forward_once() == 3
    assert forwarder.forwarded == 1 and forwarder.dead_letters == 2
    assert REGISTRY.get_sample_value("relay_outbox_dead_letters_total") == before + 2
    dead = await dead_letters(pool)
    assert [(d.channel_id, d.nonce, d.amount, d.attempts) for d in dead] == [
        (channel, 2, 50, 1),
        (unknown, 1, 1, 1),
    ]
    assert dead[0].error.startswith(PaymentReason.INSUFFICIENT_BALANCE.value)
    assert dead[1].error == PaymentReason.UNKNOWN_CHANNEL.value
    assert [row[:3] for row in await outbox_rows(db)] == [(1, 1, True)]  # the rest left
    await db.execute("UPDATE payment_outbox SET next_attempt_at = now() - interval '1 hour'")
    assert await forwarder.forward_once() == 0
    assert node.calls == [1, 2, 1]  # each refused row was sent exactly once
    assert await ledger_nonces(db, channel) == [1]


async def test_a_transport_failure_is_retried_with_backoff(
    db: psycopg.AsyncConnection[Any], client: DassieClient, pools: Pools
) -> None:
    channel = await open_channel(client)
    await enqueue(db, channel, [1])
    nowhere = DassieClient(f"ws://127.0.0.1:{free_port()}/rpc", TOKEN, timeout=1.0)
    try:
        pool, application = await pools.pool()
        away = Observed(nowhere, db, application)
        failing = OutboxForwarder(pool, away)
        assert await failing.forward_once() == 0
        [(_, attempts, acked, error, until)] = await outbox_rows(db)
        assert (attempts, acked) == (1, False) and error
        assert 0 < until <= retry_delay(0)
        assert await failing.forward_once() == 0 and away.calls == [1]  # not due yet: no call

        async def due() -> bool:
            until: float = (await outbox_rows(db))[0][4]
            return until <= 0

        await wait_until(due, timeout=5)
        assert await failing.forward_once() == 0
        [(_, attempts, acked, _, until)] = await outbox_rows(db)
        assert (attempts, acked) == (2, False)
        assert retry_delay(0) < until <= retry_delay(1)  # the delay doubled
    finally:
        await nowhere.close()
    await wait_until(due, timeout=5)
    back = OutboxForwarder(pool, Observed(client, db, application))
    assert await back.forward_once() == 1
    assert [row[:4] for row in await outbox_rows(db)] == [(1, 3, True, None)]
    assert await ledger_nonces(db, channel) == [1]
