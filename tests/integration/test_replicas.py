"""Read replicas with real processes: a throwaway primary, a streaming replica of it
(pg_basebackup, cluster/services/replica.py) and a relay with database.replica_urls.

REQs are served by the replica once it is current; a connection reads its own writes even
while the replica's replay is paused; a replica lagging past replica_max_lag_ms is skipped;
killing the replica under a loop of queries costs no client an error.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from psycopg import AsyncConnection

from cluster.config import DatabaseSettings
from cluster.nostr.signing import Signer
from cluster.services.ports import free_port
from cluster.services.postgres import PostgresServer
from cluster.services.replica import PRIMARY_REPLICATION, StandbyServer
from cluster.store.migrations import apply_migrations
from cluster.store.pool import create_pool
from cluster.store.replica_health import replica_label
from cluster.store.replicas import ReadRouter, reading_after
from tests.client import RelayClient, connect
from tests.services import RelayProcess, RelayStarter

TOKEN = "replica-test-metrics-token"
FAST_CHECKS = {
    "RELAY_DATABASE__REPLICA_CHECK_INTERVAL_MS": "100",
    "RELAY_NETWORK__METRICS_TOKEN": TOKEN,
}


@pytest.fixture(scope="module")
def primary() -> Iterator[PostgresServer]:
    root = Path(tempfile.mkdtemp(prefix="relay-replica-primary-"))
    server = PostgresServer(root / "data", free_port(), extra_settings=dict(PRIMARY_REPLICATION))
    server.start(timeout=120)
    try:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE relay")
        asyncio.run(apply_migrations(server.url("relay")))
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def replica(primary: PostgresServer) -> Iterator[StandbyServer]:
    root = Path(tempfile.mkdtemp(prefix="relay-replica-"))
    server = StandbyServer(primary, root / "data", free_port(), log_path=root / "replica.log")
    server.start(timeout=120)
    try:
        yield server
    finally:
        server.kill()
        shutil.rmtree(root, ignore_errors=True)


def start(
    starter: RelayStarter, primary: PostgresServer, replica: StandbyServer, max_lag_ms: int
) -> RelayProcess:
    return starter.start(
        workers=1,
        DATABASE_URL=primary.url("relay"),
        RELAY_DATABASE__REPLICA_URLS=json.dumps([replica.url("relay")]),
        RELAY_DATABASE__REPLICA_MAX_LAG_MS=str(max_lag_ms),
        **FAST_CHECKS,
    )


async def metric(relay: RelayProcess, name: str, label: str) -> float:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{relay.http_url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as response,
    ):
        text = await response.text()
    match = re.search(rf'^{name}\{{[a-z]+="{re.escape(label)}"\}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


async def wait_usable(relay: RelayProcess, replica: StandbyServer, usable: bool) -> None:
    label = replica_label(replica.url("relay"))
    deadline = time.monotonic() + 15
    while await metric(relay, "relay_replica_usable", label) != (1.0 if usable else 0.0):
        assert time.monotonic() < deadline, f"replica never became usable={usable}"
        await asyncio.sleep(0.1)


def replay(replica: StandbyServer, action: str) -> None:
    with psycopg.connect(replica.url("relay"), autocommit=True) as conn:
        conn.execute(f"SELECT pg_wal_replay_{action}()")


@pytest.mark.timeout(120)
async def test_reqs_are_served_by_the_replica_once_it_has_the_event(
    primary: PostgresServer, replica: StandbyServer, start_relay: RelayStarter
) -> None:
    relay = start(start_relay, primary, replica, max_lag_ms=3000)
    await wait_usable(relay, replica, True)
    label = replica_label(replica.url("relay"))
    event = Signer().sign(1, "written on the primary")
    async with connect(relay.url) as writer:
        assert (await writer.publish(event))[2] is True
    async with connect(relay.url) as reader:  # never wrote: any current replica will do
        deadline = time.monotonic() + 10
        while not await reader.query("seen", {"ids": [event.id]}):
            assert time.monotonic() < deadline, "the replica never replayed the event"
            await asyncio.sleep(0.05)
        before = await metric(relay, "relay_read_target_total", label)
        on_primary = await metric(relay, "relay_read_target_total", "primary")
        for _ in range(10):
            assert [e["id"] for e in await reader.query("r", {"ids": [event.id]})] == [event.id]
        await asyncio.sleep(0.6)  # metrics are flushed every half second
        assert await metric(relay, "relay_read_target_total", label) >= before + 10
        assert await metric(relay, "relay_read_target_total", "primary") == on_primary


@pytest.mark.timeout(120)
async def test_a_connection_reads_its_own_write_while_the_replica_is_paused(
    primary: PostgresServer, replica: StandbyServer, start_relay: RelayStarter
) -> None:
    relay = start(start_relay, primary, replica, max_lag_ms=600_000)  # never skipped for lag
    await wait_usable(relay, replica, True)
    replay(replica, "pause")
    signer = Signer()
    async with connect(relay.url) as writer, connect(relay.url) as other:
        for i in range(5):
            event = signer.sign(1, f"read your writes {i}")
            assert (await writer.publish(event))[2] is True
            # The same connection, at once: it sees its write, the paused replica would not.
            assert [e["id"] for e in await writer.query(f"w{i}", {"ids": [event.id]})] == [event.id]
        # Proof the replica really serves stale reads meanwhile: a connection that never
        # wrote is given no read-your-writes promise and reads from it.
        assert await other.query("o", {"ids": [event.id]}) == []
        replay(replica, "resume")
        deadline = time.monotonic() + 10
        while not await other.query("o2", {"ids": [event.id]}):
            assert time.monotonic() < deadline, "the replica never caught up after resume"
            await asyncio.sleep(0.05)


@pytest.mark.timeout(120)
async def test_a_replica_lagging_past_the_limit_is_skipped(
    primary: PostgresServer, replica: StandbyServer, start_relay: RelayStarter
) -> None:
    relay = start(start_relay, primary, replica, max_lag_ms=300)
    await wait_usable(relay, replica, True)
    replay(replica, "pause")
    event = Signer().sign(1, "written while the replica is paused")
    async with connect(relay.url) as writer:
        assert (await writer.publish(event))[2] is True
    await wait_usable(relay, replica, False)
    async with connect(relay.url) as reader:  # never wrote, yet reads the primary
        assert [e["id"] for e in await reader.query("r", {"ids": [event.id]})] == [event.id]
        replay(replica, "resume")
        await wait_usable(relay, replica, True)
        assert [e["id"] for e in await reader.query("r2", {"ids": [event.id]})] == [event.id]


@pytest.mark.timeout(120)
async def test_killing_the_replica_under_queries_gives_no_client_an_error(
    primary: PostgresServer, replica: StandbyServer, start_relay: RelayStarter
) -> None:
    relay = start(start_relay, primary, replica, max_lag_ms=3000)
    await wait_usable(relay, replica, True)
    event = Signer().sign(1, "read through a replica crash")
    async with connect(relay.url) as writer:
        assert (await writer.publish(event))[2] is True
    label = replica_label(replica.url("relay"))
    async with connect(relay.url) as reader:
        deadline = time.monotonic() + 10
        while not await reader.query("seen", {"ids": [event.id]}):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        started = time.monotonic()
        for i in range(200):
            if i == 50:
                replica.kill()  # SIGKILL the postmaster and its backends
            # query() asserts EOSE: a CLOSED `error:` would fail here.
            found = await reader.query(f"q{i}", {"ids": [event.id]}, {"kinds": [1], "limit": 5})
            assert event.id in {e["id"] for e in found}, i
        assert time.monotonic() - started < 10
        count_reply = await count(reader, event.id)
        assert count_reply == 1
    await asyncio.sleep(0.6)
    assert await metric(relay, "relay_read_target_total", label) >= 50
    assert await metric(relay, "relay_replica_usable", label) == 0.0


async def count(client: RelayClient, event_id: str) -> int:
    """COUNT for one id on an open client (after the replica died: served by the primary)."""
    await client.send(["COUNT", "c", {"ids": [event_id]}])
    _, reply = await client.receive_until(lambda m: m[0] in ("COUNT", "CLOSED") and m[1] == "c")
    assert reply[0] == "COUNT", reply
    return int(reply[2]["count"])


@pytest.mark.timeout(60)
async def test_the_router_sends_a_read_after_a_write_to_a_replica_only_once_it_has_it(
    primary: PostgresServer, replica: StandbyServer
) -> None:
    """The rule itself, in-process: `reading_after(t)` (t: when the write was answered)."""
    settings = DatabaseSettings(
        url=primary.url("relay"),
        replica_urls=[replica.url("relay")],
        replica_check_interval_ms=100,
        replica_max_lag_ms=600_000,
    )
    with psycopg.connect(primary.url("relay"), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS ryw")
        conn.execute("CREATE TABLE ryw (n int)")
    created = time.monotonic()
    pool = create_pool(settings)
    await pool.open()
    router = ReadRouter(pool, settings)
    await router.open()

    async def rows(conn: AsyncConnection[Any]) -> list[int]:
        cursor = await conn.execute("SELECT n FROM ryw")
        return [row[0] for row in await cursor.fetchall()]

    async def first_target(after: float | None) -> str:
        deadline = time.monotonic() + 10
        while router.targets(after)[0].label == "primary":
            assert time.monotonic() < deadline, "the replica never became usable"
            await asyncio.sleep(0.05)
        return router.targets(after)[0].label

    try:
        await first_target(created)  # the replica has the table
        replay(replica, "pause")
        with psycopg.connect(primary.url("relay"), autocommit=True) as conn:
            conn.execute("INSERT INTO ryw VALUES (1)")
        answered = time.monotonic()  # the OK goes out after the commit
        await asyncio.sleep(0.3)  # several checks: the replica is still "usable" (lag limit)
        with reading_after(answered):
            assert router.targets(answered)[0].label == "primary"
            assert await router.run(rows) == [1]
        assert await router.run(rows) == []  # no promise: the paused replica serves it
        replay(replica, "resume")
        assert await first_target(answered) == replica_label(replica.url("relay"))
        with reading_after(answered):
            assert await router.run(rows) == [1]
    finally:
        await router.close()
        await pool.close()
