"""The archive tier keeps NIP-09, NIP-62, NIP-40 and duplicates right across both tables; one
scheduled runner at a time; `relay-cluster archive` and `export --archive` from the CLI."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from cluster.config import DatabaseSettings
from cluster.nostr.event import Event, encode_event
from cluster.nostr.filters import FilterLimits, parse_filter
from cluster.nostr.signing import Signer
from cluster.store.archive import ARCHIVE_LOCK_KEY, ArchiveRunner, archive_now, archive_scope
from cluster.store.events import EventStore
from cluster.store.pool import create_pool
from cluster.store.vanish import apply_vanish
from cluster.store.writer import SaveOutcome, SaveRequest
from tests.services import migrated_database

DAY = 86_400
HORIZONS = {1: 10 * DAY, 7: 10 * DAY, 1059: 10 * DAY}
NOW = int(time.time())
OLD = NOW - 30 * DAY
LIMITS = FilterLimits(max_limit=500, default_limit=500, max_values=20)


@pytest.fixture
async def db(postgres_server_url: str) -> AsyncIterator[str]:
    async with migrated_database(postgres_server_url, "archive_sem") as url:
        yield url


@pytest.fixture
async def store(db: str) -> AsyncIterator[EventStore]:
    pool = create_pool(DatabaseSettings(url=db, pool_min=1, pool_max=4), name="archive")
    await pool.open()
    try:
        yield EventStore(pool, archive_scope(HORIZONS))
    finally:
        await pool.close()


async def save(store: EventStore, *events: Event) -> list[SaveOutcome]:
    return await store.save_many([SaveRequest(e, encode_event(e).decode()) for e in events])


async def archive(store: EventStore) -> int:
    async with store.pool.connection() as conn:
        return sum((await archive_now(conn, HORIZONS, 100)).values())


async def scalar(pool: AsyncConnectionPool, sql: str) -> int:
    async with pool.connection() as conn:
        cursor = await conn.execute(sql)
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def ids(store: EventStore, **raw: object) -> set[str]:
    rows = await store.query([parse_filter(raw, LIMITS)], NOW)
    return {msgspec.json.decode(row)["id"] for row in rows}


async def test_deletion_vanish_expiry_and_duplicates_reach_the_archive(store: EventStore) -> None:
    alice, bob = Signer(), Signer()
    note = alice.sign(1, "old note", [["t", "x"]], created_at=OLD)
    kept = alice.sign(1, "kept", [["t", "x"]], created_at=OLD)
    reaction = bob.sign(7, "+", [["e", note.id], ["p", alice.pubkey]], created_at=OLD)
    wrap = bob.sign(1059, "", [["p", alice.pubkey]], created_at=OLD)
    expiring = bob.sign(1, "soon gone", [["expiration", str(NOW + DAY)]], created_at=OLD)
    profile = alice.sign(0, "{}", created_at=OLD)  # replaceable: never archived
    await save(store, note, kept, reaction, wrap, expiring, profile)
    assert await archive(store) == 5
    assert await scalar(store.pool, "SELECT count(*) FROM events") == 1
    assert await ids(store, **{"#t": ["x"]}) == {note.id, kept.id}

    # Stored again (a sync, an import): it leaves the archive, one copy is served.
    assert await save(store, kept) == [SaveOutcome.STORED]
    assert await scalar(store.pool, "SELECT count(*) FROM archived_events") == 4
    assert await ids(store, **{"#t": ["x"]}) == {note.id, kept.id}

    # NIP-09 deletes the archived note and its tag rows.
    deletion = alice.sign(5, "", [["e", note.id]], created_at=NOW)
    assert await save(store, deletion) == [SaveOutcome.STORED]
    assert await ids(store, **{"#t": ["x"]}) == {kept.id}
    assert await save(store, note) == [SaveOutcome.DELETED]
    tags_sql = "SELECT count(*) FROM archived_event_tags WHERE tagvalue = 't:x'"
    assert await scalar(store.pool, tags_sql) == 0

    # NIP-40: the purge empties the archive of expired events too.
    assert await store.purge_expired(NOW + 2 * DAY) == 1
    assert await ids(store, authors=[bob.pubkey], kinds=[1]) == set()

    # NIP-62: alice's archived events and the gift wraps to her go.
    request = alice.sign(62, "", [["relay", "ALL_RELAYS"]], created_at=NOW)
    await apply_vanish(store.pool, request, encode_event(request).decode())
    assert await ids(store, authors=[alice.pubkey]) == set()
    assert await ids(store, kinds=[1059]) == set()
    assert await ids(store, authors=[bob.pubkey]) == {reaction.id}
    assert await scalar(store.pool, "SELECT count(*) FROM archived_events") == 1


async def test_one_scheduled_runner_moves_at_a_time(store: EventStore, db: str) -> None:
    signer = Signer()
    await save(store, *(signer.sign(7, "+", created_at=OLD - i) for i in range(250)))
    first = ArchiveRunner(db, HORIZONS, batch=50, interval=3600)
    second = ArchiveRunner(db, HORIZONS, batch=50, interval=3600)
    try:
        # Another session (the CLI, another worker mid-round) holds the lock: nobody moves.
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as holder:
            await holder.execute("SELECT pg_advisory_lock(%s)", (ARCHIVE_LOCK_KEY,))
            assert await first.run_once() is None
            assert await second.run_once() is None
            await holder.execute("SELECT pg_advisory_unlock(%s)", (ARCHIVE_LOCK_KEY,))
        results = await asyncio.gather(first.run_once(), second.run_once())
        assert sorted(results, key=lambda moved: moved or 0) in ([None, 250], [0, 250])
        assert first.moved + second.moved == 250
        assert (first.moved == 0) != (second.moved == 0)
    finally:
        await first.close()
        await second.close()
    assert await scalar(store.pool, "SELECT count(*) FROM archived_events") == 250


def cli(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": db,
        "RELAY_ARCHIVE__HORIZONS": json.dumps({str(k): v for k, v in HORIZONS.items()}),
    }
    command = [sys.executable, "-m", "cluster.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=True)


async def test_archive_and_export_archive_from_the_cli(
    store: EventStore, db: str, tmp_path: Path
) -> None:
    signer = Signer()
    old = [signer.sign(1, f"n{i}", created_at=OLD + i) for i in range(30)]
    await save(store, *old, signer.sign(1, "recent", created_at=NOW))
    assert json.loads(cli(db, "archive").stdout) == {"archived": {"1": 30, "7": 0, "1059": 0}}
    output = tmp_path / "archive.ndjson.gz"
    cli(db, "export", "--archive", "--output", str(output))
    lines = gzip.decompress(output.read_bytes()).decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [e.id for e in old]
