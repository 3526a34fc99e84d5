"""Filling PostgreSQL for the bench: a million real signed events by COPY, then a manifest.

Events are signed (BIP-340, the one Signer) and COPYed with exactly the columns the relay
stores (`cluster.store.writer.event_row`), in chunks over a process pool. The manifest keeps
values worth asking for (authors, event ids, tag targets), which the query scenarios use.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import msgspec
import psycopg

from cluster.nostr.event import encode_event
from cluster.nostr.signing import Signer
from cluster.store.writer import EVENT_ROW_COLUMNS, event_row
from loadtest.files import FillManifest, read_manifest, write_json
from loadtest.filters import HASHTAGS
from loadtest.presign import secret_for, signed_event
from loadtest.progress import log

FILL_CHUNK = 20_000
FILL_AUTHORS = 2_000
FILL_SPAN = 30 * 24 * 3600
WORDS = ["gm", "nostr", "relay", "bitcoin", "zap", "hello", "world", "note", "pleb", "art"]


@dataclass(frozen=True)
class FillChunk:
    database_url: str
    seed: str
    start: int
    count: int
    total: int
    now: int
    authors: int


class ChunkResult(msgspec.Struct):
    """Samples of one chunk for the manifest."""

    count: int
    ids: list[str]
    e_targets: list[tuple[str, int]]
    p_targets: list[tuple[str, int]]
    kinds: dict[int, int]
    time_min: int
    time_max: int


class Prewarm(msgspec.Struct, kw_only=True):
    """What pg_prewarm loaded into the buffer cache after the fill, or why it could not."""

    relations: list[str] = []
    blocks: int = 0
    seconds: float = 0.0
    error: str | None = None


def author_secret(seed: str, index: int) -> str:
    return secret_for(f"fill-{seed}", index)


def fill_chunk(chunk: FillChunk) -> ChunkResult:
    """Sign `count` realistic events and COPY them in; returns samples for the manifest."""
    rng = random.Random(f"{chunk.seed}-{chunk.start}")
    signers = [Signer(author_secret(chunk.seed, a)) for a in range(chunk.authors)]
    pubkeys = [signer.pubkey for signer in signers]
    roots: deque[str] = deque(maxlen=64)
    sample_ids: list[str] = []
    e_targets: Counter[str] = Counter()
    p_targets: Counter[str] = Counter()
    kinds: Counter[int] = Counter()
    t_min, t_max = 2**62, 0
    special = 2 * chunk.authors if chunk.start == 0 else 0  # kind 0 and 3 per author

    def author() -> int:
        return int(chunk.authors * rng.random() ** 2)

    def target(i: int) -> str:
        """A recent root to react to or repost (else a made-up id)."""
        picked = roots[-1 - int(len(roots) * rng.random() ** 3)] if roots else ""
        return picked or hashlib.sha256(b"%d" % i).hexdigest()

    with psycopg.connect(chunk.database_url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY events ({EVENT_ROW_COLUMNS}) FROM STDIN") as copy:
            for offset in range(chunk.count):
                i = chunk.start + offset
                base = chunk.now - FILL_SPAN + int(FILL_SPAN * i / chunk.total)
                created_at = min(chunk.now, base + rng.randint(0, 30))
                tags: list[list[str]] = []
                if offset < special:
                    a = offset // 2
                    kind = 0 if offset % 2 == 0 else 3
                    if kind == 3:
                        tags = [["p", pubkeys[author()]] for _ in range(rng.randint(5, 40))]
                    content = f'{{"name":"author {a}"}}' if kind == 0 else ""
                else:
                    a = author()
                    roll = rng.random()
                    if roll < 0.62:
                        kind = 1
                        if roots and rng.random() < 0.4:
                            root = roots[int(len(roots) * (1 - rng.random() ** 2)) - 1]
                            tags.append(["e", root, "", "root"])
                        if rng.random() < 0.3:
                            tags.append(["p", pubkeys[author()]])
                        if rng.random() < 0.2:
                            tags.append(["t", HASHTAGS[int(len(HASHTAGS) * rng.random() ** 2)]])
                        content = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30)))
                    elif roll < 0.87:
                        kind = 7
                        tags = [["e", target(i)], ["p", pubkeys[author()]]]
                        content = rng.choice(["+", "🤙", "❤️", "⚡"])
                    elif roll < 0.97:
                        kind = 6
                        tags = [["e", target(i), ""], ["p", pubkeys[author()]]]
                        content = ""
                    else:
                        kind = 30023
                        tags = [["d", f"article-{i}"], ["title", f"Article {i}"]]
                        tags.append(["t", HASHTAGS[int(len(HASHTAGS) * rng.random() ** 2)]])
                        content = "long form " * rng.randint(10, 100)
                content = f"{content} #{chunk.seed}-{i}" if kind not in (0, 3) else content
                event = signed_event(
                    signers[a], created_at, kind, tags, content, check=offset % 1000 == 0
                )
                copy.write_row(event_row(event, encode_event(event).decode()))
                kinds[kind] += 1
                t_min, t_max = min(t_min, created_at), max(t_max, created_at)
                if kind == 1 and not any(tag[0] == "e" for tag in tags) and rng.random() < 0.02:
                    roots.append(event.id)
                for tag in tags:
                    if tag[0] == "e":
                        e_targets[tag[1]] += 1
                    elif tag[0] == "p":
                        p_targets[tag[1]] += 1
                if offset % 997 == 0:
                    sample_ids.append(event.id)
        conn.commit()
    return ChunkResult(
        count=chunk.count,
        ids=sample_ids,
        e_targets=e_targets.most_common(200),
        p_targets=p_targets.most_common(200),
        kinds=dict(kinds),
        time_min=t_min,
        time_max=t_max,
    )


def prewarm(database_url: str) -> Prewarm:
    """Load the event tables and their indexes into PostgreSQL's buffer cache (pg_prewarm).

    A bulk COPY goes through a small ring buffer, so right after the fill the buffer cache is
    nearly empty and every first read of a page costs a read from the OS (5-10 ms for a cold
    follow-feed query here, 0.6 ms warm). A relay that has served reads for a while has its
    working set cached; the query phases measure that steady state. Reported in the notes.
    """
    started = time.monotonic()
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            # The events heap first, then every index, so that if the cache is smaller than
            # all of it, the indexes (read at random by every query) are what stays. The
            # event_tags heap is left out: tag queries read only its index.
            # (The index list comes from the catalog, so it follows the migrations.)
            rows = conn.execute(
                "SELECT r::text, pg_prewarm(r) FROM (SELECT 'events'::regclass AS r, 0 AS o"
                " UNION ALL SELECT indexrelid::regclass, 1 FROM pg_index"
                " WHERE indrelid IN ('events'::regclass, 'event_tags'::regclass)) AS rels"
                " ORDER BY o, r::text"
            ).fetchall()
    except psycopg.Error as exc:
        return Prewarm(error=str(exc).strip())
    return Prewarm(
        relations=[str(row[0]) for row in rows if row],
        blocks=sum(int(row[1]) for row in rows if row),
        seconds=round(time.monotonic() - started, 1),
    )


def count_events(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
    return int(row[0]) if row else 0


def run_chunks(chunks: list[FillChunk], started: float) -> list[ChunkResult]:
    processes = max(1, min(2, os.cpu_count() or 1, len(chunks)))
    log(f"fill: {chunks[0].total:,} events in {len(chunks)} chunks over {processes} processes")
    if processes == 1:
        return [fill_chunk(chunk) for chunk in chunks]
    results: list[ChunkResult] = []
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        for done, result in enumerate(pool.map(fill_chunk, chunks), start=1):
            results.append(result)
            if done % 10 == 0 or done == len(chunks):
                rate = sum(r.count for r in results) / (time.monotonic() - started)
                log(f"fill: {done}/{len(chunks)} chunks ({rate:,.0f} events/s)")
    return results


def fill(database_url: str, total: int, manifest_path: Path) -> FillManifest:
    """COPY signed events until `total` are stored, VACUUM ANALYZE, write the manifest.

    A data dir filled by an earlier run (same manifest, enough events) is reused as it is.
    """
    existing = count_events(database_url)
    if existing >= total and manifest_path.exists():
        log(f"fill: {existing:,} events already stored; reusing {manifest_path}")
        reused = read_manifest(manifest_path)
        return msgspec.structs.replace(reused, reused=True, stored=existing)
    seed = f"bench-{os.urandom(3).hex()}"
    # Someone else's events may be there already (--url): add ours, at least enough to know
    # values worth asking for.
    total = max(total - existing, min(total, 1000))
    started = time.monotonic()
    now = int(time.time())
    authors = min(FILL_AUTHORS, max(1, total // 50))
    chunks = [
        FillChunk(database_url, seed, start, min(FILL_CHUNK, total - start), total, now, authors)
        for start in range(0, total, FILL_CHUNK)
    ]
    results = run_chunks(chunks, started)
    copy_s = time.monotonic() - started
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) events, event_tags")
        size = conn.execute(
            "SELECT pg_size_pretty(pg_total_relation_size('events')"
            " + pg_total_relation_size('event_tags'))"
        ).fetchone()
    elapsed = time.monotonic() - started
    e_targets: Counter[str] = Counter()
    p_targets: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for result in results:
        e_targets.update(dict(result.e_targets))
        p_targets.update(dict(result.p_targets))
        kinds.update({str(k): v for k, v in result.kinds.items()})
    manifest = FillManifest(
        count=existing + total,
        added=total,
        stored=existing + total,
        seed=seed,
        authors=[Signer(author_secret(seed, a)).pubkey for a in range(min(authors, 500))],
        event_ids=[i for result in results for i in result.ids][:5000],
        e_targets=[value for value, _ in e_targets.most_common(500)],
        p_targets=[value for value, _ in p_targets.most_common(500)],
        hashtags=HASHTAGS,
        kinds=dict(kinds),
        time_min=min(r.time_min for r in results),
        time_max=max(r.time_max for r in results),
        copy_s=round(copy_s, 1),
        fill_s=round(elapsed, 1),
        rate=round(total / copy_s),
        table_size=str(size[0]) if size else "?",
        reused=False,
    )
    write_json(manifest_path, manifest)
    rate = total / copy_s
    log(f"fill: done in {elapsed:.0f}s ({rate:,.0f} events/s), table {manifest.table_size}")
    return manifest
