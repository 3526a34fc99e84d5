"""NIP-50 search on PostgreSQL full-text search: the SQL of a search filter, and the index.

The index (migrations/007_search.sql) is a partial GIN index on the expression
`to_tsvector('<config>'::regconfig, raw::json ->> 'content')` over SEARCHABLE_KINDS: the same
INSERT that stores an event keeps it current (no second pass, no extra column), and events of
other kinds (reactions, follow lists, DMs) pay nothing for it. A query uses the index only when
its expression is the index's, text search configuration included, so the configuration and the
kinds are written into the SQL as literals (never client input: the operator's validated
`search.config`, and the constant kinds); the query words travel as a bound parameter.

The configuration the index was built with can differ from the configured one (the operator
changed `search.config`): answers stay right, because queries always use the configured one on
both sides of `@@`, but slow (no index matches). `rebuild_search_index` (run by
`python -m cluster.store.search`) builds the index for the configured configuration
CONCURRENTLY, then swaps it in, writes continuing meanwhile.

Ranking: ts_rank of the newest SEARCH_CANDIDATES matches, then created_at DESC. Ranking every
match of a common word would recompute the document of each (tens of thousands of rows); the
newest candidates bound the work of one REQ whatever the word.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from cluster.nostr.filters import Filter
from cluster.nostr.search import SEARCHABLE_KINDS

INDEX_NAME = "events_search_idx"
STATISTICS_NAME = "events_search_stats"
INDEX_OPTIONS = "fastupdate = on, gin_pending_list_limit = 1024"
"""As in migrations/007_search.sql: inserts append to the pending list, which
clean_pending_list empties in the background."""
CLEAN_INTERVAL = 1.0
BUILD_LOCK_KEY = 0x5EA7C4
"""Advisory lock of the index build (the session's: released when its connection closes)."""
SEARCH_CANDIDATES = 100
"""Newest matches of one search filter that are ranked (at least `limit`); the best `limit` of
them are sent. Ranking recomputes each candidate's document (JSON + to_tsvector: ~35 us here),
so 500 candidates cost a REQ ~20 ms where 100 cost ~4 ms."""
RECENT_WINDOW = 86400
"""Seconds of newest events searched first for candidates (the rest only if they are too few)."""
DEFAULT_CONFIG = "simple"
CONFIG_NAME = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?")
"""A text search configuration name safe to write into SQL (`english`, `pg_catalog.simple`)."""
KINDS_SQL = "kind IN (" + ", ".join(str(kind) for kind in SEARCHABLE_KINDS) + ")"


def _config_literal(config: str) -> str:
    if not CONFIG_NAME.fullmatch(config):
        raise ValueError(f"not a text search configuration name: {config!r}")
    return f"'{config}'::regconfig"


def document(config: str) -> str:
    """The indexed expression, character for character what the index is built on."""
    return f"to_tsvector({_config_literal(config)}, relay_search_text(raw))"


def search_condition(flt: Filter, config: str) -> tuple[str, list[Any]]:
    """The condition that restricts a filter to its search matches ("" if it has no search);
    cluster/store/sql.py filter_conditions adds it to every filter's WHERE clause."""
    if flt.search is None:
        return "", []
    query = f"plainto_tsquery({_config_literal(config)}, %s)"
    return f"{KINDS_SQL} AND {document(config)} @@ {query}", [flt.search.text]


def search_select(
    flt: Filter, now: int, where: str, params: list[Any], columns: str, config: str
) -> tuple[str, list[Any]]:
    """A search filter's best `limit` events: the newest SEARCH_CANDIDATES events matching
    `where` (filter_conditions, search included), ranked by ts_rank, ties newest first.

    The candidates are looked for in the last RECENT_WINDOW seconds first, then before: one
    UNION ALL whose second branch PostgreSQL runs only when the first found too few. Within
    the window the planner can AND the word's index bitmap with the time index's, and so reads
    only recent matches, where a word in a few percent of a million notes otherwise costs a
    read of every match (27,000 rows, 150 ms) or a walk of the time index recomputing each
    event's document (docs/SEARCH-AND-COUNT.md).
    """
    assert flt.search is not None
    wanted = max(SEARCH_CANDIDATES, flt.limit)
    order = "ORDER BY created_at DESC, id LIMIT %s"
    if flt.ids is not None or flt.authors is not None:
        # Already narrow (an author's events): their own index leads, no window helps.
        candidates = f"SELECT * FROM events WHERE {where} {order}"
        candidate_params = [*params, wanted]
    else:
        recent = f"(SELECT * FROM events WHERE {where} AND created_at >= %s {order})"
        older = f"(SELECT * FROM events WHERE {where} AND created_at < %s {order})"
        candidates = f"SELECT * FROM ({recent} UNION ALL {older}) AS windows LIMIT %s"
        start = now - RECENT_WINDOW
        candidate_params = [*params, start, wanted, *params, start, wanted, wanted]
    rank = f"ts_rank({document(config)}, plainto_tsquery({_config_literal(config)}, %s))"
    sql = (
        f"SELECT {columns} FROM ({candidates}) AS candidates"
        f" ORDER BY {rank} DESC, created_at DESC, id LIMIT %s"
    )
    return sql, [*candidate_params, flt.search.text, flt.limit]


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


async def index_config(conn: psycopg.AsyncConnection[Any]) -> str | None:
    """The configuration the search index is built with, or None when there is no index."""
    cursor = await conn.execute(
        "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indexrelid = to_regclass(%s)",
        (INDEX_NAME,),
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    found = re.search(r"to_tsvector\('([^']+)'::regconfig", str(row[0]))
    return found[1] if found else None


async def rebuild_search_index(
    conninfo: str, config: str, *, only_if_missing: bool = False
) -> bool:
    """Make the search index use `config` (`python -m cluster.store.search`), or with
    `only_if_missing` only make sure there is one (each worker at start-up when search is
    enabled); False when nothing was to do or another session is building it. Built CONCURRENTLY
    under a new name, then swapped in, so inserts go on while it builds (minutes on millions
    of events) and the old index serves until the new one is valid."""
    _config_literal(config)  # a name unsafe in SQL is refused before any I/O
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute("SELECT %s::regconfig", (config,))  # an unknown config fails here
        built_for = await index_config(conn)
        if built_for == config or (only_if_missing and built_for is not None):
            return False
        # One builder at a time, cluster-wide (every worker of every instance may try at
        # start-up); the others return at once, the index being built meanwhile.
        cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (BUILD_LOCK_KEY,))
        row = await cursor.fetchone()
        if not (row and row[0]):
            return False
        if await index_config(conn) == config:  # built by another worker before we locked
            return False
        building = f"{INDEX_NAME}_new"
        await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {building}".encode())
        await conn.execute(
            f"CREATE INDEX CONCURRENTLY {building} ON events USING gin"
            f" ({document(config)})"
            f" WITH ({INDEX_OPTIONS}) WHERE {KINDS_SQL}".encode()
        )
        await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX_NAME}".encode())
        await conn.execute(f"ALTER INDEX {building} RENAME TO {INDEX_NAME}".encode())
        # The planner's word frequencies (migrations/007_search.sql) follow the configuration.
        await conn.execute(f"DROP STATISTICS IF EXISTS {STATISTICS_NAME}".encode())
        await conn.execute(
            f"CREATE STATISTICS {STATISTICS_NAME} ON ({document(config)}) FROM events".encode()
        )
        await conn.execute("ANALYZE events")
    return True


def main(argv: list[str] | None = None) -> int:
    """`python -m cluster.store.search [--config NAME]`: rebuild the search index for the
    configured (or given) text search configuration; the relay's settings give the database."""
    from cluster.config import load_settings

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--config", help="text search configuration (default: search.config)")
    args = parser.parse_args(argv)
    settings = load_settings()
    config = args.config or settings.search.config
    if not settings.database.url:
        print("database.url is not set: export DATABASE_URL=postgresql://...", file=sys.stderr)
        return 2
    try:
        changed = asyncio.run(rebuild_search_index(settings.database.url, config))
    except (ValueError, psycopg.Error) as exc:
        print(f"search index not rebuilt: {exc}", file=sys.stderr)
        return 1
    print(f"search index rebuilt for '{config}'" if changed else f"search index uses '{config}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
