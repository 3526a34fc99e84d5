"""Reads cannot starve writes: while one address floods expensive COUNTs, another connection's
EVENT is still committed (the writer has connections of its own) and another address's REQ still
reaches EOSE (queries are admitted round-robin across addresses); the flood itself is answered,
with CLOSED `rate-limited:` past its queue and CLOSED `error:` past the count timeout."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import struct
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import msgspec
import orjson
import psycopg
import pytest

from cluster.nostr.signing import Signer
from cluster.store.migrations import apply_migrations
from tests.client import RelayClient
from tests.services import RelayProcess, RelayStarter, create_database, drop_database, unique_name

STORED = 100_000
"""Events in the crowded database: a COUNT over four filters of them takes ~0.4 s here."""
SEED = """INSERT INTO events (id, pubkey, created_at, kind, raw)
SELECT sha256(int4send(i)), sha256(int4send(i %% 1000)), 1700000000 + i, 1, '{}'
FROM generate_series(1, %s) AS i"""
# A UNION of four filters that each match every stored event: a scan plus a large hash.
# Every author of SEED (sha256(int4send(i % 1000))), so each filter matches every event through
# the author index: counts an index narrows are counted exactly (filters no index narrows, like
# {} or {"kinds": [1]}, get the planner's estimate at once: cluster/store/counts.py).
ALL_AUTHORS = [hashlib.sha256(struct.pack(">i", i)).hexdigest() for i in range(1000)]
EXPENSIVE_COUNT = [
    {"authors": ALL_AUTHORS},
    {"authors": ALL_AUTHORS, "kinds": [1]},
    {"authors": ALL_AUTHORS, "since": 1},
    {"authors": ALL_AUTHORS, "until": 2_000_000_000},
]
FLOOD_CONNECTIONS = 12
ATTACKER, LEGITIMATE = "127.0.1.2", "127.0.1.3"


@pytest.fixture
async def crowded_database(postgres_server_url: str) -> AsyncIterator[str]:
    name = unique_name("relay_isolation")
    url = create_database(postgres_server_url, name)
    try:
        await apply_migrations(url)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(SEED, (STORED,))
            await conn.execute("ANALYZE events")
        yield url
    finally:
        drop_database(postgres_server_url, name)


@pytest.fixture
def guarded_relay(crowded_database: str, start_relay: RelayStarter) -> RelayProcess:
    """Set up after the database, so stopped before it is dropped."""
    return start_relay.start(
        workers=1,
        DATABASE_URL=crowded_database,
        # Two query connections, two query slots: without isolation the flood holds them all
        # and an EVENT waiting for one fails after pool_timeout.
        RELAY_DATABASE__POOL_MIN="1",
        RELAY_DATABASE__POOL_MAX="2",
        RELAY_DATABASE__POOL_TIMEOUT="2",
        RELAY_DATABASE__COUNT_TIMEOUT_MS="100",
        RELAY_QUERIES__CONCURRENCY="2",
        RELAY_QUERIES__QUEUE_PER_ADDRESS="4",
        RELAY_LIMITS__MAX_MESSAGE_BYTES="400000",  # EXPENSIVE_COUNT is ~270 kB
    )


@contextlib.asynccontextmanager
async def session_from(address: str) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0, local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def flood_counts(ws: aiohttp.ClientWebSocketResponse, answers: Counter[str]) -> None:
    """One COUNT at a time (the relay reads a connection's messages in order), forever."""
    serial = 0
    while True:
        serial += 1
        sub_id = f"c{serial}"
        await ws.send_str(orjson.dumps(["COUNT", sub_id, *EXPENSIVE_COUNT]).decode())
        while True:
            message: list[Any] = orjson.loads((await ws.receive(timeout=30)).data)
            if message[1] == sub_id:
                break
        if message[0] == "COUNT":
            answers["counted"] += 1
        else:
            answers[message[2].split(":", 1)[0]] += 1


@contextlib.contextmanager
def running(tasks: list[asyncio.Task[None]]) -> Iterator[None]:
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()


async def connections_by_pool(database_url: str) -> Counter[str]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'relay-cluster-%'"
        )
        return Counter(row[0] for row in await cursor.fetchall())


async def test_a_count_flood_neither_starves_writes_nor_other_addresses_reads(
    guarded_relay: RelayProcess, crowded_database: str
) -> None:
    signer = Signer()
    answers: Counter[str] = Counter()
    async with session_from(ATTACKER) as attacker, session_from(LEGITIMATE) as legitimate:
        flood = [await attacker.ws_connect(guarded_relay.url) for _ in range(FLOOD_CONNECTIONS)]
        tasks = [asyncio.create_task(flood_counts(ws, answers)) for ws in flood]
        writer = RelayClient(await legitimate.ws_connect(guarded_relay.url))
        reader = RelayClient(await legitimate.ws_connect(guarded_relay.url))
        with running(tasks):
            # The flood is in full swing: every slot taken, its queue full, refusals coming back.
            for _ in range(100):
                if answers["rate-limited"] and answers["error"]:
                    break
                await asyncio.sleep(0.05)
            for i in range(5):
                event = signer.sign(1, f"still heard {i}")
                ok = await asyncio.wait_for(writer.publish(event), 10)
                assert ok == ["OK", event.id, True, ""], ok
                stored = await asyncio.wait_for(
                    reader.query(f"mine{i}", {"authors": [signer.pubkey]}), 10
                )
                assert len(stored) == i + 1
                assert msgspec.to_builtins(event) in stored
            # The writer commits on a connection of its own, beside the query pool's two.
            pools = await connections_by_pool(crowded_database)
            assert pools["relay-cluster-relay-writer"] == 1, pools
            assert pools["relay-cluster-relay"] <= 2, pools
        assert not any(task.done() and not task.cancelled() for task in tasks), [
            task.exception() for task in tasks if task.done() and not task.cancelled()
        ]
    # Past its queue the flood is refused at once; admitted counts are cut at count_timeout_ms.
    assert answers["rate-limited"] > 0, answers
    assert answers["error"] > 0, answers
    assert answers["counted"] == 0, answers  # every full count takes longer than 100 ms
    assert set(answers) <= {"rate-limited", "error"}, answers
