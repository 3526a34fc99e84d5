"""A warmed pool connection has the common REQ shapes prepared, and clients' queries reuse them."""

from __future__ import annotations

import time

from cluster.config import DatabaseSettings
from cluster.nostr.filters import FilterLimits, parse_filter
from cluster.nostr.signing import Signer
from cluster.store.events import EventStore
from cluster.store.pool import create_pool
from cluster.store.warmup import common_shapes
from tests.services import create_database, drop_database, unique_name


async def prepared_count(store: EventStore) -> int:
    async with store.pool.connection() as conn:
        cursor = await conn.execute("SELECT count(*) FROM pg_prepared_statements")
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def test_warm_connections_serve_common_shapes_from_prepared_statements(
    database_url: str,
) -> None:
    settings = DatabaseSettings(url=database_url, pool_min=1, pool_max=1)
    pool = create_pool(settings, name="warm-test", warm=True)
    await pool.open()
    try:
        store = EventStore(pool)
        shapes = len(common_shapes(int(time.time())))
        assert await prepared_count(store) == shapes
        author, other = Signer(), Signer()
        stored = author.sign(1, "warm")
        # Real values, every common shape, six times each: past psycopg's prepare threshold,
        # so a shape whose statement did not match would add a prepared statement of its own.
        now = int(time.time())
        clients = [
            {"authors": [author.pubkey], "limit": 20},
            {"authors": [author.pubkey], "kinds": [1], "limit": 20},
            {"authors": [author.pubkey, other.pubkey], "kinds": [1, 6], "limit": 50},
            {"kinds": [7], "limit": 20},
            {"#e": [stored.id], "kinds": [1, 7], "limit": 50},
            {"#p": [other.pubkey], "limit": 20},
            {"#t": ["nostr"], "kinds": [1], "limit": 20},
            {"ids": [stored.id, other.pubkey]},
            {"since": now - 600, "until": now, "limit": 50},
        ]
        assert len(clients) == shapes
        for raw in clients:
            for _ in range(6):
                await store.query([parse_filter(raw, FilterLimits())], now)
        assert await prepared_count(store) == shapes
    finally:
        await pool.close()


async def test_warm_up_failing_leaves_the_connection_serving(postgres_server_url: str) -> None:
    """No event tables yet (migrations not run): the warm-up fails, the pool still works."""
    name = unique_name("warmup_empty")
    url = create_database(postgres_server_url, name)
    pool = create_pool(DatabaseSettings(url=url, pool_min=1, pool_max=1), name="cold", warm=True)
    try:
        await pool.open(wait=True, timeout=10)
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT 1")
            assert await cursor.fetchone() == (1,)
    finally:
        await pool.close()
        drop_database(postgres_server_url, name)
