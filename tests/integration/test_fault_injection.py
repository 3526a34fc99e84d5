"""Fault injection with real processes: PostgreSQL crashing under writes, a worker SIGKILLed in
the middle of paid publishing, nginx reloaded under live subscriptions.

Each test records its figures (sent, acknowledged, stored, delivered, lost) with `record`,
which docs/RELIABILITY.md quotes from a real run (`RELIABILITY_LOG=... make test`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import psycopg
import pytest

from cluster.nostr.signing import Signer
from cluster.payments.claims import payment_tag, sender_pubkey_of
from cluster.payments.dassie import DassieClient
from cluster.services.nginx import NginxServer
from cluster.services.nginx_config import default_worker_user, write_nginx_config
from cluster.services.ports import free_port
from cluster.services.postgres import PostgresServer
from cluster.store.migrations import apply_migrations
from tests.client import connect
from tests.services import LedgerProcess, RelayProcess, RelayStarter, record


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    root = Path(tempfile.mkdtemp(prefix="relay-fault-pg-"))
    server = PostgresServer(root / "data", free_port())
    server.start(timeout=120)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.timeout(300)
async def test_postgres_crash_gives_error_answers_never_false_ok_and_pools_recover(
    own_postgres: PostgresServer, start_relay: RelayStarter
) -> None:
    with psycopg.connect(own_postgres.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE relay")
    database = own_postgres.url("relay")
    await apply_migrations(database)
    relay = start_relay.start(DATABASE_URL=database, RELAY_DATABASE__POOL_TIMEOUT="2")
    signer = Signer()
    answers: dict[str, list[Any]] = {}
    try:
        async with connect(relay.url) as client:
            for i in range(100):
                if i == 60:
                    own_postgres.kill()  # a crash: only WAL-durable commits survive
                if i == 68:  # each answer during the outage waits out the pool timeout (2 s)
                    own_postgres.start(timeout=120)
                event = signer.sign(1, f"through a crash {i}")
                answers[event.id] = await client.publish(event)
            # The pools reconnect by themselves: new writes succeed without a relay restart.
            after = signer.sign(1, "after recovery")
            for _ in range(50):
                ok = await client.publish(after)
                if ok[2]:
                    break
                await asyncio.sleep(0.2)
            assert ok[2] is True, ok
            answers[after.id] = ok
            stored = {
                e["id"]
                for e in await client.query("all", {"authors": [signer.pubkey], "limit": 100})
            }
            stored |= {
                e["id"]
                for e in await client.query(
                    "rest", {"authors": [signer.pubkey], "until": 2**40, "limit": 100}
                )
            }
        async with await psycopg.AsyncConnection.connect(database) as conn:
            cursor = await conn.execute(
                "SELECT encode(id, 'hex') FROM events WHERE pubkey = %s",
                (bytes.fromhex(signer.pubkey),),
            )
            stored = {row[0] for row in await cursor.fetchall()}
    finally:
        relay.stop()
    acknowledged = {event_id for event_id, ok in answers.items() if ok[2] is True}
    refused = {event_id: ok[3] for event_id, ok in answers.items() if ok[2] is False}
    assert refused, "the crash window produced no refusals: the test did not bite"
    assert all(message.startswith("error:") for message in refused.values()), refused
    lost = acknowledged - stored
    assert not lost
    record(
        "postgres crash under writes",
        sent=len(answers),
        acknowledged=len(acknowledged),
        refused_with_error=len(refused),
        stored=len(stored),
        lost=len(lost),
    )


async def test_worker_sigkill_mid_paid_publishing_loses_and_double_charges_nothing(
    start_relay: RelayStarter, database_url: str, tmp_path: Path
) -> None:
    token = secrets.token_hex(24)
    ledger = LedgerProcess(database_url, tmp_path / "ledger.log", token=token)
    ledger.start()
    relay = start_relay.start(
        DASSIE_RPC_URL=ledger.url, DASSIE_RPC_TOKEN=token, RELAY_PRICING="4000:10"
    )
    payer = Signer()
    try:
        async with DassieClient(ledger.url, token) as node:
            channels = [
                (await node.open_channel(sender_pubkey_of(payer.secret), 100_000, "BTC")).channel_id
                for _ in range(4)
            ]
        # One channel per connection, so nonces arrive in order and few are refused as stale.
        shares = [
            [
                payer.sign(
                    4000, f"paid {c} {n}", [payment_tag(payer.secret, channel, 10, n, "BTC")]
                )
                for n in range(1, 101)
            ]
            for c, channel in enumerate(channels)
        ]
        events = [event for share in shares for event in share]
        oks: dict[str, bool] = {}

        async def publish_share(share: list[Any]) -> None:
            async with aiohttp.ClientSession() as session:
                ws = await session.ws_connect(relay.url)
                for event in share:
                    await ws.send_json(["EVENT", msgspec.to_builtins(event)])
                while True:
                    try:
                        message = await ws.receive(timeout=10)
                    except TimeoutError:
                        break
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break  # our worker was the one killed
                    reply = msgspec.json.decode(message.data)
                    if reply[0] == "OK":
                        oks[reply[1]] = reply[2]
                        if len([e for e in share if e.id in oks]) == len(share):
                            break
                await ws.close()

        publishing = asyncio.gather(*(publish_share(share) for share in shares))
        for _ in range(500):  # kill once publishing is under way (bounded: 10 s)
            if len(oks) >= 40:
                break
            await asyncio.sleep(0.02)
        assert len(oks) >= 40, f"publishing never got going: {len(oks)} answers\n{relay.log_tail()}"
        os.kill(relay.worker_pids()[0], signal.SIGKILL)
        await publishing
        relay.wait_healthy(30)
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            cursor = await conn.execute(
                "SELECT encode(e.id, 'hex'), k.amount FROM events e"
                " JOIN payment_claims k ON k.event_id = e.id WHERE k.channel_id = ANY(%s)",
                (channels,),
            )
            stored = {row[0]: row[1] for row in await cursor.fetchall()}
            cursor = await conn.execute(
                "SELECT coalesce(sum(spent), 0), (SELECT count(*) FROM payment_claims"
                " WHERE channel_id = ANY(%s)) FROM payment_channels WHERE channel_id = ANY(%s)",
                (channels, channels),
            )
            row = await cursor.fetchone()
            spent, claims = (int(row[0]), int(row[1])) if row else (0, 0)
    finally:
        relay.stop()
        ledger.stop()
    acknowledged = {event_id for event_id, ok in oks.items() if ok}
    figures = f"{len(oks)} answers, {len(acknowledged)} OK, {len(stored)} stored, spent {spent}"
    assert acknowledged, f"nothing was acknowledged: the test did not bite ({figures})"
    missing = acknowledged - set(stored)
    assert not missing, (
        f"{len(missing)} acknowledged but not stored; relay log:\n{relay.log_tail()}"
    )
    # ... and every stored event was charged exactly once.
    assert (spent, claims) == (sum(stored.values()), len(stored)), figures
    record(
        "worker SIGKILL during paid publishing",
        sent=len(events),
        acknowledged=len(acknowledged),
        stored=len(stored),
        charged_claims=claims,
        spent=spent,
        lost=len(acknowledged - set(stored)),
        double_charged=claims - len(stored),
    )


async def test_nginx_reload_keeps_subscriptions_and_accepts_new_connections(
    relay: RelayProcess, tmp_path: Path
) -> None:
    port = free_port()
    prefix = tmp_path / "nginx"
    conf = write_nginx_config(
        prefix / "nginx.conf", port, [relay.port], prefix, user=default_worker_user()
    )
    nginx = NginxServer(conf, prefix, listen=[("127.0.0.1", port)])
    nginx.test_config()
    nginx.start(timeout=30)
    signer = Signer()
    url = f"ws://127.0.0.1:{port}"
    delivered = 0
    try:
        async with connect(url) as subscriber, connect(url) as publisher:
            await subscriber.send(["REQ", "r", {"authors": [signer.pubkey]}])
            assert await subscriber.receive() == ["EOSE", "r"]
            for phase in range(3):
                if phase == 1:
                    nginx.reload()
                event = signer.sign(1, f"phase {phase}")
                assert (await publisher.publish(event))[2] is True
                message = await subscriber.receive()
                assert message[2]["id"] == event.id
                delivered += 1
            async with connect(url) as newcomer:  # served by the reloaded workers
                found = await newcomer.query("n", {"authors": [signer.pubkey]})
                assert len(found) == 3
    finally:
        nginx.stop()
    record(
        "nginx reload under live subscriptions",
        sent=3,
        acknowledged=3,
        delivered=delivered,
        lost=3 - delivered,
    )
