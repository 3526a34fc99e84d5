"""NIP-50 search on PostgreSQL full-text search: the SQL of a search filter, and its documents.

Each searchable event's document (its `content` as a tsvector, in the operator's `search.config`)
is STORED in `events.search_doc` (migration 011), written by the same INSERT that stores the
event: a BEFORE INSERT trigger for SEARCHABLE_KINDS, which exists only while search is enabled
(events of other kinds, and every event while search is off, pay nothing). A partial GIN index
on the column finds a word's matches. Stored rather than recomputed because both halves of a
search read documents row by row: checking the newest events one by one for a common word, and
ranking the candidates. Recomputed from `raw` (JSON, then to_tsvector) that cost 15-40 us a row,
so the planner had to build a bitmap of every match of a common word (118,000 rows, 22 ms on a
million events); read from the column it costs well under a microsecond (docs/SEARCH-AND-COUNT.md).

`ensure_search_documents` (each worker at start-up when search is enabled, one of them doing
the work; `python -m cluster.store.search`) makes the trigger, the stored documents and the
index follow `search.config`: a backfill of stored events, newest first, in short batches, with
its progress in `search_state` (so it resumes where a stopped one left off), then the index,
built CONCURRENTLY; writes go on meanwhile. Until the backfill reaches an event, a search does
not find it. The configuration is written into the SQL as a literal (never client input: the
operator's validated `search.config`); the query words travel as a bound parameter.

Ranking: ts_rank of the newest SEARCH_CANDIDATES matches, then created_at DESC: the newest
candidates bound the work of one REQ whatever the word.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import psycopg
from psycopg_pool import AsyncConnectionPool

from cluster.nostr.filters import Filter
from cluster.nostr.search import SEARCHABLE_KINDS

INDEX_NAME = "events_search_doc_idx"
TRIGGER_NAME = "events_search_doc"
INDEX_OPTIONS = "fastupdate = on, gin_pending_list_limit = 1024"
"""Inserts append to the pending list, which clean_pending_list empties in the background."""
CLEAN_INTERVAL = 1.0
BUILD_LOCK_KEY = 0x5EA7C4
"""Advisory lock of the documents' builder (the session's: released when its connection closes)."""
BACKFILL_BATCH = 2000
"""Stored events given their document per transaction: short row locks, a resumable cursor."""
SEARCH_CANDIDATES = 100
"""Newest matches of one search filter that are ranked (at least `limit`); the best `limit` of
them are sent."""
DEFAULT_CONFIG = "simple"
CONFIG_NAME = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?")
"""A text search configuration name safe to write into SQL (`english`, `pg_catalog.simple`)."""
KINDS_SQL = "kind IN (" + ", ".join(str(kind) for kind in SEARCHABLE_KINDS) + ")"
DOCUMENT = "search_doc"


def _config_literal(config: str) -> str:
    if not CONFIG_NAME.fullmatch(config):
        raise ValueError(f"not a text search configuration name: {config!r}")
    return f"'{config}'::regconfig"


def _query(config: str) -> str:
    return f"plainto_tsquery({_config_literal(config)}, %s)"


def _narrow(flt: Filter) -> bool:
    """Ids or authors: a few thousand events at most, whose own index leads."""
    return flt.ids is not None or flt.authors is not None


def search_condition(flt: Filter, config: str) -> tuple[str, list[Any]]:
    """The condition that restricts a filter to its search matches ("" if it has no search);
    cluster/store/sql.py filter_conditions adds it to every filter's WHERE clause.

    A narrow filter matches with the function behind `@@`, which no index serves: the planner
    would otherwise AND the author's rows with the bitmap of every match of the word in the
    table, whose cost it underestimates (22 ms for a common word, where checking an author's
    thousand events' stored documents takes 2)."""
    if flt.search is None:
        return "", []
    if _narrow(flt):
        return f"ts_match_vq({DOCUMENT}, {_query(config)})", [flt.search.text]
    return f"{DOCUMENT} @@ {_query(config)}", [flt.search.text]


def search_select(
    flt: Filter, where: str, params: list[Any], columns: str, config: str
) -> tuple[str, list[Any]]:
    """A search filter's best `limit` events: the newest SEARCH_CANDIDATES events matching
    `where` (filter_conditions, search included), ranked by ts_rank, ties newest first.

    The planner picks how to find the candidates from the word's frequency (ANALYZE keeps the
    most common words of a tsvector column): a common word by walking the time index newest
    first and checking each stored document, a rare one from the GIN index."""
    assert flt.search is not None
    wanted = max(SEARCH_CANDIDATES, flt.limit)
    candidates = f"SELECT * FROM events WHERE {where} ORDER BY created_at DESC, id LIMIT %s"
    sql = (
        f"SELECT {columns} FROM ({candidates}) AS candidates"
        f" ORDER BY ts_rank({DOCUMENT}, {_query(config)}) DESC, created_at DESC, id LIMIT %s"
    )
    return sql, [*params, wanted, flt.search.text, flt.limit]


async def clean_pending_list(pool: AsyncConnectionPool[Any]) -> int:
    """Move the search index's pending entries into its tree (pages cleaned; 0 without an
    index). Run every CLEAN_INTERVAL by each worker, so no insert has to; concurrent calls
    queue on the index's metapage and the later ones find the list empty."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT CASE WHEN to_regclass(%s) IS NULL THEN 0"
            " ELSE gin_clean_pending_list(to_regclass(%s)) END",
            (INDEX_NAME, INDEX_NAME),
        )
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


class SearchState(NamedTuple):
    """What `search_state` says of the stored documents."""

    config: str
    complete: bool


async def search_state(conn: psycopg.AsyncConnection[Any]) -> SearchState | None:
    """The configuration of the stored documents and whether every stored event has its
    document; None when search was never enabled on this database."""
    cursor = await conn.execute("SELECT config, complete FROM search_state")
    row = await cursor.fetchone()
    return SearchState(str(row[0]), bool(row[1])) if row else None


async def _trigger_config(conn: psycopg.AsyncConnection[Any]) -> str | None:
    cursor = await conn.execute(
        "SELECT tgargs FROM pg_trigger WHERE tgrelid = 'events'::regclass AND tgname = %s",
        (TRIGGER_NAME,),
    )
    row = await cursor.fetchone()
    return bytes(row[0]).split(b"\0")[0].decode() if row else None  # NUL-terminated args


async def _index_valid(conn: psycopg.AsyncConnection[Any]) -> bool | None:
    """True: the index is usable; False: a build that did not finish left it invalid."""
    cursor = await conn.execute(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (INDEX_NAME,)
    )
    row = await cursor.fetchone()
    return bool(row[0]) if row else None


async def _ready(conn: psycopg.AsyncConnection[Any], config: str) -> bool:
    """Every stored event has its document in `config`, new ones get it, the index is valid."""
    return (
        await search_state(conn) == SearchState(config, True)
        and await _trigger_config(conn) == config
        and bool(await _index_valid(conn))
    )


Progress = Callable[[int, int], None]
"""Called after each backfill batch with (events examined in it, documents written so far)."""


async def _backfill(
    conn: psycopg.AsyncConnection[Any], config: str, progress: Progress | None
) -> int:
    """Give stored searchable events their document in `config`, newest first, from the
    cursor of search_state on; each batch and its cursor commit together. Only documents that
    differ are written (a re-enabled relay rewrites only what was stored meanwhile)."""
    cursor = await conn.execute("SELECT cursor_created_at, cursor_id FROM search_state")
    row = await cursor.fetchone()
    after: tuple[int, bytes] | None = (int(row[0]), bytes(row[1])) if row and row[0] else None
    document = f"relay_search_document({_config_literal(config)}, raw)"  # the trigger's too
    written = 0
    while True:
        if after is None:
            page = await conn.execute(
                f"SELECT ctid, created_at, id FROM events WHERE {KINDS_SQL}"
                " ORDER BY created_at DESC, id LIMIT %s",
                (BACKFILL_BATCH,),
            )
        else:
            page = await conn.execute(
                f"SELECT ctid, created_at, id FROM events WHERE {KINDS_SQL}"
                " AND created_at <= %s AND (created_at < %s OR id > %s)"
                " ORDER BY created_at DESC, id LIMIT %s",
                (after[0], after[0], after[1], BACKFILL_BATCH),
            )
        rows = await page.fetchall()
        if not rows:
            return written
        after = (int(rows[-1][1]), bytes(rows[-1][2]))
        async with conn.transaction():
            # By ctid, the heap pages the page's walk just read: by id, every row would be a
            # random primary-key probe (240 us a row with the table out of shared buffers).
            # A ctid reused meanwhile by another event is harmless: each row's document is
            # computed from its own `raw`.
            updated = await conn.execute(
                f"UPDATE events SET search_doc = {document}"
                " WHERE ctid = ANY(%s::text[]::tid[])"
                f" AND {KINDS_SQL} AND search_doc IS DISTINCT FROM {document}",
                ([str(r[0]) for r in rows],),
            )
            await conn.execute(
                "UPDATE search_state SET cursor_created_at = %s, cursor_id = %s", after
            )
        written += max(0, updated.rowcount)
        if progress is not None:
            progress(len(rows), written)


async def ensure_search_documents(
    conninfo: str, config: str, *, recompute: bool = False, progress: Progress | None = None
) -> bool:
    """Make the trigger, the stored documents and the index follow `config`; False when all
    already did, or another session is at it (it holds BUILD_LOCK_KEY). `recompute` starts the
    backfill over from the newest event (after a change to relay_search_text's body).

    Resumable: search_state keeps the configuration and the backfill's cursor, so a worker
    stopped midway leaves the next one the rest. Concurrent writers are not held up: the
    trigger is replaced in one short statement, batches lock BACKFILL_BATCH rows each, the
    index is built CONCURRENTLY."""
    _config_literal(config)  # a name unsafe in SQL is refused before any I/O
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute("SELECT %s::regconfig", (config,))  # an unknown config fails here
        if await _ready(conn, config) and not recompute:
            return False
        # One builder at a time, cluster-wide (every worker of every instance may try at
        # start-up); the others return at once, the documents being built meanwhile.
        cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (BUILD_LOCK_KEY,))
        row = await cursor.fetchone()
        if not (row and row[0]):
            return False
        if await _ready(conn, config) and not recompute:
            return False  # finished by another worker between our check and the lock
        state = await search_state(conn)
        async with conn.transaction():
            # New events get their document from here on, so the backfill's end is the end.
            await conn.execute(
                f"CREATE OR REPLACE TRIGGER {TRIGGER_NAME} BEFORE INSERT ON events"
                f" FOR EACH ROW WHEN (NEW.{KINDS_SQL}) EXECUTE FUNCTION"
                f" relay_search_doc('{config}')".encode()  # checked by _config_literal
            )
            if state is None or state.config != config or recompute:
                await conn.execute(
                    "INSERT INTO search_state (config) VALUES (%s) ON CONFLICT (only_row)"
                    " DO UPDATE SET config = excluded.config, cursor_created_at = NULL,"
                    " cursor_id = NULL, complete = false",
                    (config,),
                )
        await _backfill(conn, config, progress)
        if await _index_valid(conn) is False:  # a build that was interrupted
            await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX_NAME}".encode())
        await conn.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX_NAME} ON events USING gin"
            f" ({DOCUMENT}) WITH ({INDEX_OPTIONS}) WHERE {DOCUMENT} IS NOT NULL".encode()
        )
        await conn.execute("ANALYZE events")  # the column's word frequencies, for the planner
        await conn.execute("UPDATE search_state SET complete = true")
    return True


async def documents_trigger_config(conninfo: str) -> str | None:
    """The configuration stored events get their document in, None when they get none."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        return await _trigger_config(conn)


async def stop_search_documents(conninfo: str, lock_timeout_ms: int = 2000) -> bool:
    """Search turned off (`python -m cluster.store.search --off`): drop the trigger, so writes
    stop paying for documents; False when there was none. The documents and the index stay;
    search_state is marked incomplete with its cursor at the newest event, so enabling search
    again writes only what was stored meanwhile. DROP TRIGGER waits for the table's lock at
    most `lock_timeout_ms` (then raises psycopg.errors.LockNotAvailable: run it again)."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        if await _trigger_config(conn) is None:
            return False
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}".encode())
            await conn.execute(f"DROP TRIGGER IF EXISTS {TRIGGER_NAME} ON events".encode())
            await conn.execute(
                "UPDATE search_state SET complete = false, cursor_created_at = NULL,"
                " cursor_id = NULL"
            )
    return True


def main(argv: list[str] | None = None) -> int:
    """`python -m cluster.store.search [--config NAME] [--recompute] [--off]`: make the stored
    search documents and their index follow the configured (or given) text search
    configuration, or (--off) stop writing them; the relay's settings give the database."""
    from cluster.config import load_settings

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--config", help="text search configuration (default: search.config)")
    parser.add_argument("--recompute", action="store_true", help="recompute every stored document")
    parser.add_argument(
        "--off", action="store_true", help="stop writing documents (search turned off)"
    )
    args = parser.parse_args(argv)
    settings = load_settings()
    config = args.config or settings.search.config
    if not settings.database.url:
        print("database.url is not set: export DATABASE_URL=postgresql://...", file=sys.stderr)
        return 2
    if args.off:
        try:
            dropped = asyncio.run(stop_search_documents(settings.database.url))
        except psycopg.Error as exc:
            print(f"search documents' trigger not dropped: {exc}", file=sys.stderr)
            return 1
        print("stored events no longer get search documents" if dropped else "search was off")
        return 0
    started = time.monotonic()
    examined = 0

    def report(batch: int, written: int) -> None:
        nonlocal examined
        examined += batch
        rate = examined / max(time.monotonic() - started, 1e-9)
        print(f"\r{examined:,} events examined, {written:,} documents written ({rate:,.0f}/s)",
              end="", file=sys.stderr, flush=True)  # fmt: skip

    try:
        changed = asyncio.run(
            ensure_search_documents(
                settings.database.url, config, recompute=args.recompute, progress=report
            )
        )
    except (ValueError, psycopg.Error) as exc:
        print(f"search documents not built: {exc}", file=sys.stderr)
        return 1
    if examined:
        print(file=sys.stderr)
    print(f"search documents built for '{config}'" if changed else f"search uses '{config}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
