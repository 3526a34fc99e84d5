"""migrate on real PostgreSQL: fresh and old-layout databases end alike; a rerun is a no-op.

The old layout is the tree before the functions moved to cluster/store/functions/ (commit
OLD_LAYOUT), read from git history: its migrations defined the functions themselves, and a
database they migrated must upgrade by replacing the functions, with no migration re-run.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cluster.store.migrations import apply_migrations, available_migrations
from tests.services import create_database, drop_database, unique_name

OLD_LAYOUT = "2dc78f2"
ALL_VERSIONS = [migration.number for migration in available_migrations()]
OLD_MIGRATIONS = ["001_events", "002_payments", "003_batch_save", "004_tag_index"]
REPO = Path(__file__).resolve().parents[2]

CATALOG = {
    "functions": "SELECT p.proname, pg_get_function_identity_arguments(p.oid),"
    " pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
    " WHERE n.nspname = 'public' ORDER BY 1, 2",
    "triggers": "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal"
    " ORDER BY 1",
    "columns": "SELECT table_name, column_name, data_type, is_nullable, column_default"
    " FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2",
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
    "migrations": "SELECT version, name FROM schema_migrations ORDER BY 1",
}

NewDatabase = Callable[[], str]


@pytest.fixture
def new_database(postgres_server_url: str) -> Iterator[NewDatabase]:
    """Empty databases this test owns, dropped afterwards."""
    names: list[str] = []

    def create() -> str:
        names.append(unique_name("relay_migrate"))
        return create_database(postgres_server_url, names[-1])

    try:
        yield create
    finally:
        for name in names:
            drop_database(postgres_server_url, name)


@pytest.fixture(scope="module")
def old_migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of the old layout's migrations, from git history."""
    found = []
    for stem in OLD_MIGRATIONS:
        shown = subprocess.run(
            ["git", "show", f"{OLD_LAYOUT}:cluster/store/migrations/{stem}.sql"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        if shown.returncode != 0:
            pytest.fail(f"needs the git history with commit {OLD_LAYOUT}: {shown.stderr.strip()}")
        found.append((int(stem[:3]), stem[4:], shown.stdout))
    return found


async def catalog(url: str) -> dict[str, list[tuple[Any, ...]]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return {
            part: await (await conn.execute(sql.encode())).fetchall()
            for part, sql in CATALOG.items()
        }


async def migrate_like_the_old_layout(url: str, migrations: list[tuple[int, str, str]]) -> None:
    """What the old runner left: each old file applied once, recorded in schema_migrations."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name, sql in migrations:
            async with conn.transaction():
                await conn.execute(sql.encode())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (version, name),
                )


@pytest.fixture
async def fresh(new_database: NewDatabase) -> AsyncIterator[str]:
    url = new_database()
    assert await apply_migrations(url) == ALL_VERSIONS
    yield url


async def test_an_old_layout_database_upgrades_to_the_same_schema_and_functions(
    fresh: str, new_database: NewDatabase, old_migrations: list[tuple[int, str, str]]
) -> None:
    old = new_database()
    await migrate_like_the_old_layout(old, old_migrations)
    before = await catalog(old)
    # nothing the old layout applied is re-run (only migrations newer than it)...
    assert await apply_migrations(old) == [v for v in ALL_VERSIONS if v > len(old_migrations)]
    after = await catalog(old)
    assert after["functions"] != before["functions"]  # ...but the functions were replaced
    assert after == await catalog(fresh)


async def test_migrate_twice_is_a_no_op(fresh: str) -> None:
    before = await catalog(fresh)
    assert await apply_migrations(fresh) == []
    assert await catalog(fresh) == before


async def test_concurrent_migrates_queue_on_the_lock(new_database: NewDatabase) -> None:
    url = new_database()
    results = await asyncio.gather(*(apply_migrations(url) for _ in range(3)))
    assert sorted(results) == [[], [], ALL_VERSIONS]
