"""Versioned SQL migrations, then the SQL functions, applied under one advisory lock.

`apply_migrations` (relay-cluster migrate, and every relay start) applies two kinds of file:

- `migrations/NNN_name.sql`: the schema (tables, indexes, triggers, backfills). Each runs ONCE,
  in version order, in its own transaction, recorded in `schema_migrations`. A schema change is a
  new migration. An applied migration may only be edited in ways that leave a fresh database
  where the old text left it (moving its functions out to `functions/` was such an edit).
- `functions/NNN_name.sql`: the CURRENT definition of every SQL function, one function per file,
  written `CREATE OR REPLACE FUNCTION`. All of them run after the migrations on EVERY migrate,
  in one transaction, so applying them is idempotent, a change to a function is an edit of its
  file (no migration restates it), and a database migrated by any older layout ends with the
  same functions as a fresh one.

What may stay in a migration: a function the migration needs WHILE it runs (a trigger it creates
must name an existing function; a backfill may call one), in the version it needs. The function
file replaces it moments later in the same migrate. 004_tag_index.sql is the one such case
today (its triggers name relay_event_tags_added/removed). CREATE OR REPLACE cannot change a
function's parameter names or types or its return type: changing a signature takes a migration
that DROPs the old function; the file then creates the new one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg

# Any constant works; it only has to be the same for every process migrating this database.
MIGRATION_LOCK_KEY = 7_305_221_019
_FILENAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class SqlFile:
    """One numbered file: a migration (number = schema version) or a function definition."""

    number: int
    name: str
    sql: str


def _numbered_files(folder: str) -> list[SqlFile]:
    """The NNN_name.sql files of cluster/store/<folder>, in number order (numbers unique)."""
    found = []
    for entry in resources.files("cluster.store").joinpath(folder).iterdir():
        match = _FILENAME.match(entry.name)
        if match:
            found.append(SqlFile(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda file: file.number)
    numbers = [file.number for file in found]
    if len(set(numbers)) != len(numbers):
        raise RuntimeError(f"duplicate numbers in cluster/store/{folder}: {numbers}")
    return found


def available_migrations() -> list[SqlFile]:
    """The migrations shipped in cluster/store/migrations, in version order."""
    return _numbered_files("migrations")


def available_functions() -> list[SqlFile]:
    """The function definitions shipped in cluster/store/functions, in the order they apply."""
    return _numbered_files("functions")


async def apply_migrations(conninfo: str) -> list[int]:
    """Apply every pending migration, then every function file; returns the migrations applied.

    Safe to call from many instances starting at once (they queue on the advisory lock).
    """
    applied_now: list[int] = []
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cursor = await conn.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in await cursor.fetchall()}
            for migration in available_migrations():
                if migration.number in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql.encode())
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.number, migration.name),
                    )
                applied_now.append(migration.number)
            # One transaction: running relays see either every old function or every new one.
            async with conn.transaction():
                for function in available_functions():
                    await conn.execute(function.sql.encode())
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied_now


async def ensure_database(server_url: str, dbname: str) -> None:
    """Create `dbname` on the server if missing (for `up` and test fixtures)."""
    async with await psycopg.AsyncConnection.connect(server_url, autocommit=True) as conn:
        cursor = await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
        if await cursor.fetchone() is None:
            await conn.execute(
                psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(dbname))
            )
