"""COUNT (NIP-45, with HLL) and search (NIP-50) on a million events: latency through a relay.

    .venv/bin/python -m loadtest.bench_counts [--events 1000000] [--rounds 100]

Fills a throwaway database (dropped at the end) with events generated inside PostgreSQL, starts
one relay instance (`relay-cluster serve`, one worker) on it, and times round trips over a
WebSocket: COUNT -> answer for reactions to a note and followers of a key (hot and ordinary
targets), REQ -> EOSE for one- and two-word searches (common, middling and rare words). It also
times the PostgreSQL insert of a note with and without the search index (the write path's cost).

Why not loadtest/fill.py: it signs every event (80 s per million here), has 2,000 authors (so
at most 2,000 followers per key) and a ten-word vocabulary, where these shapes need keys with
tens of thousands of followers, notes with thousands of reactions and a Zipf vocabulary. COUNT
and search never verify signatures, so the events carry a dummy `sig`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import orjson
import psycopg

from cluster.services.ports import free_port
from cluster.store.migrations import apply_migrations
from cluster.store.search import INDEX_NAME, ensure_search_documents, stop_search_documents
from loadtest.bench_services import REDIS, bench_services
from loadtest.progress import log

SERVER = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
"""The machine's PostgreSQL: what `make bench` reports the version of (the measurements run on
loadtest/bench_services.py's own server, built from the same binaries)."""
AUTHORS = 50_000
VOCABULARY = 20_000
HOT_NOTES = 10_000
SPAN = 30 * 24 * 3600
CHUNK = 100_000
REPO = Path(__file__).resolve().parents[1]

# One chunk of events as PostgreSQL generates them: author i of the first AUTHORS rows writes
# its follow list (kind 3, p-tags skewed towards low author numbers: author 0 is followed by
# about 40% of everyone); then notes (60%, 5-40 words, rank r of the vocabulary with
# probability ~1/r), reactions (25%) and reposts (10%) of hot notes (note k with probability
# ~k^-2/3) and comments (5%).
FILL = """
WITH base AS (
  SELECT i, sha256(('a' || CASE WHEN i <= %(authors)s THEN i - 1
                             ELSE floor(%(authors)s * random() ^ 2)::int END)::bytea) AS pubkey,
         %(start)s + (i::bigint * %(span)s / %(total)s) AS created_at,
         CASE WHEN i <= %(authors)s THEN 3 WHEN i %% 100 < 60 THEN 1 WHEN i %% 100 < 85 THEN 7
              WHEN i %% 100 < 95 THEN 6 ELSE 1111 END AS kind
  FROM generate_series(%(first)s::int, %(last)s::int) AS i
), shaped AS (
  SELECT b.*, CASE
      WHEN kind = 3 THEN (SELECT array_agg(DISTINCT 'p:' || encode(sha256(('a' ||
             floor(%(authors)s * random() ^ 4)::int)::bytea), 'hex'))
             FROM generate_series(1, 20 + (i %% 30)) AS g WHERE g > 0 AND i > 0)
      WHEN kind IN (6, 7) THEN ARRAY['e:' || encode(sha256(('n' ||
             floor(%(hot)s * random() ^ 3)::int)::bytea), 'hex')]
      ELSE '{}'::text[] END AS tagvalues,
    CASE WHEN kind IN (1, 1111) THEN (SELECT string_agg('v' ||
             floor(exp(random() * ln(%(vocabulary)s)))::int, ' ')
             FROM generate_series(1, 5 + (i %% 36)) AS g WHERE g > 0 AND i > 0)
         WHEN kind = 7 THEN '+' ELSE '' END AS content
  FROM base b
)
INSERT INTO events (id, pubkey, created_at, kind, address, tagvalues, raw)
SELECT sha256(int8send(i)), pubkey, created_at, kind,
       CASE WHEN kind = 3 THEN '3:' || encode(pubkey, 'hex') || ':' END, tagvalues,
       json_build_object('id', encode(sha256(int8send(i)), 'hex'), 'pubkey', encode(pubkey, 'hex'),
         'created_at', created_at, 'kind', kind,
         'tags', (SELECT coalesce(json_agg(json_build_array(split_part(v, ':', 1),
                  substr(v, 3))), '[]') FROM unnest(tagvalues) AS v),
         'content', content, 'sig', repeat('0', 128))::text
FROM shaped
"""


def key(prefix: str, number: int) -> str:
    """The hex of sha256('<prefix><number>'), as FILL names authors ('a') and hot notes ('n')."""
    return hashlib.sha256(f"{prefix}{number}".encode()).hexdigest()


def fill(url: str, total: int) -> float:
    """Generate `total` events, then their search documents and index (as a relay with search
    enabled builds them on a filled table), VACUUM ANALYZE; returns the seconds that took."""
    start = int(time.time()) - SPAN
    with psycopg.connect(url, autocommit=True) as conn:
        for first in range(1, total + 1, CHUNK):
            params = {"authors": AUTHORS, "start": start, "span": SPAN, "total": total,
                      "first": first, "last": min(total, first + CHUNK - 1), "hot": HOT_NOTES,
                      "vocabulary": VOCABULARY}  # fmt: skip
            conn.execute(FILL.encode(), params)
            log(f"fill: {min(total, first + CHUNK - 1):,} events")
        started = time.monotonic()
        # The relay's own documents, index and word statistics (what its query reads).
        asyncio.run(ensure_search_documents(url, "simple"))
        index_s = time.monotonic() - started
        conn.execute("VACUUM (ANALYZE) events, event_tags")
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        conn.execute(
            "SELECT pg_prewarm(indexrelid) FROM pg_index"
            " WHERE indrelid IN ('events'::regclass, 'event_tags'::regclass)"
        )
        conn.execute("SELECT pg_prewarm('events')")
    return index_s


def insert_cost(url: str, with_index: bool, rounds: int = 400) -> tuple[float, float]:
    """Median microseconds of one committed INSERT of a 25-word note, and of a reaction."""
    times: dict[int, list[float]] = {1: [], 7: []}
    with psycopg.connect(url, autocommit=True) as conn:
        if not with_index:  # search off: no documents written, no index
            asyncio.run(stop_search_documents(url))
            conn.execute(f"DROP INDEX IF EXISTS {INDEX_NAME}".encode())
        for n in range(rounds):
            for kind in (1, 7):
                event_id = os.urandom(32)
                content = " ".join(f"v{(n * 7919 + w * 104729) % 5000}" for w in range(25))
                raw = orjson.dumps({"id": event_id.hex(), "kind": kind, "content": content})
                started = time.perf_counter()
                conn.execute(
                    "INSERT INTO events (id, pubkey, created_at, kind, tagvalues, raw)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    (event_id, os.urandom(32), int(time.time()), kind, [], raw.decode()),
                )
                times[kind].append((time.perf_counter() - started) * 1e6)
    return statistics.median(times[1]), statistics.median(times[7])


class Relay:
    """One `relay-cluster serve` on the bench database."""

    def __init__(self, url: str, redis_url: str = REDIS) -> None:
        self.port = free_port()
        # NIP-50 is off by default (docs/SEARCH-AND-COUNT.md); off, every search shape below
        # would be answered CLOSED. fill() built the index, so the relay has none to build.
        env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": redis_url,
               "RELAY_REDIS__KEY_PREFIX": f"bench-counts-{os.getpid()}:",
               "RELAY_LIMITS__MAX_LIMIT": "5000", "RELAY_SEARCH__ENABLED": "true"}  # fmt: skip
        command = [str(Path(sys.executable).parent / "relay-cluster"), "serve",
                   "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]  # fmt: skip
        self.process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def wait(self) -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(f"http://127.0.0.1:{self.port}/health") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError("the relay did not become healthy")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


Probe = Callable[[aiohttp.ClientWebSocketResponse, int], Awaitable[str]]
"""Round trip number `serial`; returns what the relay answered, summed up."""
Filters = Callable[[int], dict[str, object]]
"""The filter of round `serial` (the same each round, or a different target each round)."""


def count_probe(filter_of: Filters) -> Probe:
    async def probe(ws: aiohttp.ClientWebSocketResponse, serial: int) -> str:
        await ws.send_str(orjson.dumps(["COUNT", f"c{serial}", filter_of(serial)]).decode())
        answer = orjson.loads((await ws.receive(timeout=30)).data)
        if answer[0] != "COUNT":
            return str(answer)
        fields = answer[2]
        marks = " approximate" if fields.get("approximate") else ""
        marks += " +hll" if "hll" in fields else ""
        return f"count {fields['count']:,}{marks}"

    return probe


def req_probe(filter_of: Filters) -> Probe:
    async def probe(ws: aiohttp.ClientWebSocketResponse, serial: int) -> str:
        sub_id = f"r{serial}"
        await ws.send_str(orjson.dumps(["REQ", sub_id, filter_of(serial)]).decode())
        events = 0
        while True:
            message = orjson.loads((await ws.receive(timeout=30)).data)
            if message[0] != "EVENT":
                await ws.send_str(orjson.dumps(["CLOSE", sub_id]).decode())
                return f"{events} events, {message[0]}"
            events += 1

    return probe


async def timed(ws: aiohttp.ClientWebSocketResponse, probe: Probe, rounds: int) -> str:
    """Milliseconds: the first round trip (cold: nothing cached in the relay), then p50 / p95
    / max of `rounds` more; and what the last one answered."""
    started = time.perf_counter()
    await probe(ws, 10**6)
    cold = (time.perf_counter() - started) * 1000
    samples = []
    answer = ""
    for serial in range(rounds):
        started = time.perf_counter()
        answer = await probe(ws, serial)
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, int(len(samples) * 0.95))]
    figures = f"{samples[len(samples) // 2]:.2f} | {p95:.2f} | {samples[-1]:.2f}"
    return f"{cold:.1f} | {figures} | {answer}"


def same(flt: dict[str, object]) -> Filters:
    return lambda serial: flt


def rotating(first: int) -> Filters:
    """A one-word search for the word of rank first + serial % 100, limit 20."""
    return lambda serial: {"search": f"v{first + serial % 100}", "limit": 20}


def shapes() -> list[tuple[str, Probe]]:
    """Every measured shape: fixed targets (repeated: hot ones then come from the relay's
    count cache), and rotating ones (a new target each round: never cached)."""
    found: list[tuple[str, Probe]] = []
    for label, number in (("hottest note", 0), ("100th note", 99), ("3000th note", 2999)):
        flt = {"kinds": [7], "#e": [key("n", number)]}
        found.append((f"COUNT reactions, {label}", count_probe(same(flt))))
    found.append(("COUNT reactions, notes 100-199 in turn", count_probe(
        lambda serial: {"kinds": [7], "#e": [key("n", 100 + serial % 100)]})))  # fmt: skip
    for label, number in (("most followed key", 0), ("100th key", 99), ("5000th key", 4999)):
        flt = {"kinds": [3], "#p": [key("a", number)]}
        found.append((f"COUNT followers, {label}", count_probe(same(flt))))
    found.append(("COUNT followers, keys 100-199 in turn", count_probe(
        lambda serial: {"kinds": [3], "#p": [key("a", 100 + serial % 100)]})))  # fmt: skip
    found.append(("COUNT {} (estimate)", count_probe(same({}))))
    found.append(("COUNT kinds [1] (estimate)", count_probe(same({"kinds": [1]}))))
    for rank, label in ((1, "commonest"), (50, "50th"), (1000, "1000th"), (15000, "15000th")):
        flt = {"search": f"v{rank}", "limit": 20}
        found.append((f"REQ search 1 word, {label} word", req_probe(same(flt))))
    for first, label in ((10, "10th-109th"), (1000, "1000th-1099th")):
        found.append((f"REQ search 1 word, {label} words in turn", req_probe(rotating(first))))
    for a, b in ((2, 30), (100, 400), (3000, 8000)):
        flt = {"kinds": [1], "search": f"v{a} v{b}", "limit": 20}
        found.append((f"REQ search 2 words v{a} v{b}, kinds [1]", req_probe(same(flt))))
    flt = {"authors": [key("a", 3)], "search": "v10", "limit": 20}
    found.append(("REQ search 1 word + author", req_probe(same(flt))))
    return found


async def measure(url: str, rounds: int, redis_url: str = REDIS) -> list[tuple[str, str]]:
    relay = Relay(url, redis_url)
    try:
        await relay.wait()
        rows = []
        async with aiohttp.ClientSession() as session, session.ws_connect(relay.url) as ws:
            for label, probe in shapes():
                rows.append((label, await timed(ws, probe, rounds)))
                log(f"{label}: {rows[-1][1]}")
        return rows
    finally:
        relay.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="bench-counts-") as work,
        bench_services(Path(work)) as (server, redis_url),
    ):
        return run(server, redis_url, args.events, args.rounds)


def run(server: str, redis_url: str, events: int, rounds: int) -> int:
    """Fill, measure and print the tables on a throwaway database of `server`."""
    name = f"bench_counts_{os.getpid()}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    url = server.rsplit("/", 1)[0] + f"/{name}"
    try:
        asyncio.run(apply_migrations(url))
        started = time.monotonic()
        index_s = fill(url, events)
        log(f"fill: {time.monotonic() - started:.0f} s, search documents built in {index_s:.1f} s")
        rows = asyncio.run(measure(url, rounds, redis_url))
        with_note, with_reaction = insert_cost(url, with_index=True)
        without_note, without_reaction = insert_cost(url, with_index=False)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())
    print(f"\n{events:,} events; search documents and index built in {index_s:.1f} s\n")
    print("| shape | cold ms | p50 ms | p95 ms | max ms | answer |\n|---|---|---|---|---|---|")
    for label, figures in rows:
        print(f"| {label} | {figures} |")
    print("\n| INSERT, one per commit (median µs) | search on (document + index) | off |")
    print("|---|---|---|")
    print(f"| note, 25 words | {with_note:.0f} | {without_note:.0f} |")
    print(f"| reaction (not indexed) | {with_reaction:.0f} | {without_reaction:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
