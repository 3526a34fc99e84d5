"""The archive tier on a store of N events: insert cost and query p95 with and without it.

    .venv/bin/python -m loadtest.bench_archive [--events 2000000] [--rounds 200]

Fills a throwaway database (dropped at the end) with N events generated inside PostgreSQL over
the last 365 days (notes 60%, reactions 30% to a thousand hot notes, reposts 10%), then, in
this process (cluster/store, no relay: the figures are the database's): times single-event
saves through the real batch save and the common REQ/COUNT shapes, runs the archive (reactions
and reposts after 30 days, notes never) and times the same again. 10,000,000 events take too
long to fill on a two-core machine (about 10 minutes before the first query), so the default is
2,000,000; docs/OPERATIONS.md records runs of 1,000,000 and 10,000,000.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import psycopg

from cluster.config import DatabaseSettings
from cluster.nostr.event import Event, encode_event
from cluster.nostr.filters import FilterLimits, parse_filter
from cluster.store.archive import archive_now, archive_scope
from cluster.store.counts import count_events
from cluster.store.events import EventStore
from cluster.store.migrations import apply_migrations
from cluster.store.pool import create_pool
from cluster.store.search import DEFAULT_CONFIG
from cluster.store.writer import SaveRequest
from loadtest.progress import log

SERVER = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
DAY = 86_400
HORIZONS = {7: 30 * DAY, 6: 30 * DAY}
AUTHORS = 20_000
HOT = 1_000
CHUNK = 200_000
LIMITS = FilterLimits(max_limit=500, default_limit=100, max_values=100)

FILL = """
INSERT INTO events (id, pubkey, created_at, kind, tagvalues, raw)
SELECT id, pubkey, created_at, kind, tagvalues,
       json_build_object('id', encode(id, 'hex'), 'pubkey', encode(pubkey, 'hex'),
                         'created_at', created_at, 'kind', kind, 'tags', '[]'::json,
                         'content', '', 'sig', repeat('0', 128))::text
FROM (
  SELECT sha256(('e' || i)::bytea) AS id,
         sha256(('a' || (i %% %(authors)s))::bytea) AS pubkey,
         %(now)s::bigint - (i * 365 * 86400 / %(total)s::bigint) AS created_at,
         CASE WHEN i %% 10 < 6 THEN 1 WHEN i %% 10 < 9 THEN 7 ELSE 6 END AS kind,
         CASE WHEN i %% 10 < 6 THEN ARRAY['t:t' || (i %% 50)]
              ELSE ARRAY['e:' || encode(
                  sha256(('hot' || floor(%(hot)s * random() ^ 2)::int)::bytea), 'hex')]
         END AS tagvalues
  FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i
) AS generated
"""


def hot_note(rank: int) -> str:
    return hashlib.sha256(f"hot{rank}".encode()).hexdigest()


def author(rank: int) -> str:
    return hashlib.sha256(f"a{rank}".encode()).hexdigest()


def shapes(now: int) -> dict[str, dict[str, Any]]:
    """The REQ shapes timed, by name; which reach the archive is in the name."""
    return {
        "notes feed (live only)": {"kinds": [1], "limit": 50},
        "reactions, last day (live only)": {"kinds": [7], "since": now - DAY, "limit": 50},
        "reactions to a hot note (both)": {"kinds": [7], "#e": [hot_note(0)], "limit": 100},
        "reactions to a note (both)": {"kinds": [7], "#e": [hot_note(500)], "limit": 100},
        "an author, all kinds (both)": {"authors": [author(7)], "limit": 100},
        "follow feed of 50 (both)": {"authors": [author(i) for i in range(50)], "limit": 100},
        "everything (both)": {"limit": 100},
    }


async def timed(call: Callable[[], Awaitable[object]], rounds: int) -> tuple[float, float]:
    """p50 and p95 of `rounds` calls, in milliseconds (after two warm-up calls)."""
    for _ in range(2):
        await call()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    cuts = statistics.quantiles(samples, n=20)
    return statistics.median(samples), cuts[18]


async def measure(store: EventStore, now: int, rounds: int, label: str) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for name, raw in shapes(now).items():
        flt = parse_filter(raw, LIMITS)
        figures[f"REQ {name}"] = await timed(partial(store.query, [flt], now), rounds)
    counted = parse_filter({"kinds": [7], "#e": [hot_note(500)]}, LIMITS)

    async def count_uncached() -> object:
        """The NIP-45 answer as computed, not from the count cache: once a count over both tiers
        takes 5 ms it would be kept for 30 s, and the figure would time a dictionary lookup."""

        async def fetch(conn: Any) -> object:
            return await count_events(conn, [counted], now, None, DEFAULT_CONFIG, store.archive)

        return await store.reads.run(fetch)

    figures["COUNT reactions to a note (both)"] = await timed(count_uncached, rounds)
    serial = 0

    async def save_one() -> None:
        nonlocal serial
        serial += 1
        event = Event(
            id=hashlib.sha256(f"{label}{serial}".encode()).hexdigest(),
            pubkey=author(serial % AUTHORS),
            created_at=now,
            kind=7,
            tags=[["e", hot_note(serial % HOT)]],
            content="+",
            sig="0" * 128,
        )
        await store.save_many([SaveRequest(event, encode_event(event).decode())])

    figures["insert one reaction"] = await timed(save_one, rounds)
    for name, (p50, p95) in figures.items():
        log(f"{label:>8}  {name:<40} p50 {p50:7.2f} ms  p95 {p95:7.2f} ms")
    return figures


async def run(events: int, rounds: int) -> None:
    name = f"bench_archive_{os.getpid()}"
    with psycopg.connect(SERVER, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = SERVER.rsplit("/", 1)[0] + f"/{name}"
    try:
        await apply_migrations(url)
        now = int(time.time())
        started = time.perf_counter()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            for first in range(1, events + 1, CHUNK):
                last = min(first + CHUNK - 1, events)
                values = {"authors": AUTHORS, "now": now, "total": events, "hot": HOT}
                await conn.execute(FILL, {**values, "first": first, "last": last})
                log(f"filled {last:,} events")
            await conn.execute("VACUUM ANALYZE")
        log(f"fill: {time.perf_counter() - started:.0f} s")
        pool = create_pool(DatabaseSettings(url=url, pool_min=1, pool_max=2), name="bench")
        await pool.open()
        try:
            await measure(EventStore(pool), now, rounds, "before")
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                started = time.perf_counter()
                moved = sum((await archive_now(conn, HORIZONS, 5000, now)).values())
                seconds = time.perf_counter() - started
                log(f"archive: {moved:,} events in {seconds:.1f} s ({moved / seconds:,.0f}/s)")
                await conn.execute("VACUUM ANALYZE")
            await measure(EventStore(pool, archive_scope(HORIZONS)), now, rounds, "after")
        finally:
            await pool.close()
    finally:
        with psycopg.connect(SERVER, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(run(args.events, args.rounds))


if __name__ == "__main__":
    main()
