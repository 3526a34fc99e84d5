"""Shared fixtures: real PostgreSQL, Redis and relay processes for the whole test session."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cluster.services.ports import free_port
from cluster.services.postgres import PostgresServer
from cluster.services.redis import RedisServer
from tests.services import (
    DEFAULT_PG,
    DEFAULT_REDIS,
    LEDGER_TOKEN,
    LedgerProcess,
    RelayProcess,
    RelayStarter,
    migrated_database,
    postgres_reachable,
    redis_reachable,
    running_ledger,
    unique_name,
)

SERVICE_FIXTURES = frozenset(
    {
        "postgres_server_url",
        "redis_url",
        "database_url",
        "relay_env",
        "relay",
        "start_relay",
        "ledger",
        "own_ledger",
        "own_redis",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a real service (through any fixture) as `services`, so
    `make test-fast` (-m "not services") runs only what needs no database, Redis or process."""
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server for the session: the machine's, or a throwaway one we start."""
    url = os.environ.get("TEST_DATABASE_URL", DEFAULT_PG)
    if postgres_reachable(url):
        yield url
        return
    # Not under pytest's tmp dir: pytest resets it to 0700, which the unprivileged postmaster
    # could then no longer traverse.
    data_dir = Path(tempfile.mkdtemp(prefix="relay-test-pg-"))
    server = PostgresServer(data_dir / "data", free_port())
    server.start(timeout=120)
    try:
        yield server.url("postgres")
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS)
    if redis_reachable(url):
        yield url
        return
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url()
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def database_url(postgres_server_url: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this session, dropped at the end."""
    async with migrated_database(postgres_server_url, "relay_test") as url:
        yield url


@pytest.fixture(scope="session")
def key_prefix() -> str:
    return unique_name("test") + ":"


@pytest.fixture(scope="session")
def relay_env(database_url: str, redis_url: str, key_prefix: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "RELAY_REDIS__KEY_PREFIX": key_prefix,
        # Small limits so limit tests stay cheap; the defaults are documented in config.py.
        "RELAY_LIMITS__MAX_SUBSCRIPTIONS": "5",
        "RELAY_LIMITS__MAX_FILTERS": "4",
        "RELAY_LIMITS__MAX_EVENT_TAGS": "50",
        "RELAY_LIMITS__MAX_CONTENT_LENGTH": "2000",
        "RELAY_LIMITS__MAX_MESSAGE_BYTES": "65536",
        "RELAY_LIMITS__MAX_LIMIT": "100",
        "RELAY_LIMITS__DEFAULT_LIMIT": "50",
    }


@pytest.fixture(scope="session")
def relay(
    relay_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RelayProcess]:
    """One relay instance (2 workers) shared by the end-to-end tests of this session."""
    process = RelayProcess(
        relay_env, workers=2, log_path=tmp_path_factory.mktemp("relay") / "relay.log"
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def start_relay(relay_env: dict[str, str], tmp_path: Path) -> Iterator[RelayStarter]:
    """Relays this test owns (and may break): `start_relay.start(workers=1, REDIS_URL=...)`."""
    starter = RelayStarter(relay_env, tmp_path)
    try:
        yield starter
    finally:
        starter.stop_all()


@pytest.fixture(scope="module")
def ledger(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LedgerProcess]:
    """One ledger node per test module, sharing the session database (schema `ledger`)."""
    with running_ledger(database_url, tmp_path_factory.mktemp("ledger") / "ledger.log") as node:
        yield node


@pytest.fixture
def own_ledger(database_url: str, tmp_path: Path) -> Iterator[LedgerProcess]:
    """A ledger node this test may freeze, kill and restart."""
    process = LedgerProcess(database_url, tmp_path / "ledger.log", token=LEDGER_TOKEN)
    process.start()
    try:
        yield process
    finally:
        process.thaw()
        process.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis this test may kill and restart (same port)."""
    server = RedisServer(free_port(), tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()
