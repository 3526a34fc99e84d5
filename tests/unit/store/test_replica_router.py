"""Which server a read goes to (cluster/store/replicas.py), without a database: the pools are
built but never opened."""

from __future__ import annotations

import psycopg
import pytest

from cluster.config import ConfigError, DatabaseSettings, load_settings
from cluster.store.pool import create_pool
from cluster.store.replicas import PRIMARY, ReadRouter, _retryable

PRIMARY_URL = "postgresql://postgres@127.0.0.1:5/relay"
REPLICAS = ["postgresql://postgres@10.0.0.1:5432/relay", "postgresql://u:pw@10.0.0.2:6432/relay"]


def router(max_lag_ms: int = 1000) -> ReadRouter:
    settings = DatabaseSettings(
        url=PRIMARY_URL, replica_urls=REPLICAS, replica_max_lag_ms=max_lag_ms
    )
    return ReadRouter(create_pool(settings), settings)


def current(reads: ReadRouter, *, caught_up_at: float = 100.0) -> None:
    for target in reads.replicas:
        assert target.health is not None
        target.health.reachable, target.health.lag = True, 0.0
        target.health.caught_up_at = caught_up_at


def labels(reads: ReadRouter, after: float | None = None) -> list[str]:
    return [target.label for target in reads.targets(after)]


def test_without_replicas_every_read_is_the_primarys() -> None:
    settings = DatabaseSettings(url=PRIMARY_URL)
    reads = ReadRouter(create_pool(settings), settings)
    assert labels(reads) == [PRIMARY]
    assert reads.checker is None


def test_replicas_are_unusable_until_checked() -> None:
    assert labels(router()) == [PRIMARY]


def test_usable_replicas_take_turns_and_the_primary_comes_last() -> None:
    reads = router()
    current(reads)
    first, second = labels(reads), labels(reads)
    assert first[-1] == second[-1] == PRIMARY
    assert {first[0], second[0]} == {"10.0.0.1:5432/relay", "10.0.0.2:6432/relay"}
    assert "pw" not in "".join(first)


def test_down_lagging_and_not_yet_fresh_replicas_are_skipped() -> None:
    reads = router(max_lag_ms=1000)
    current(reads)
    one, two = (target.health for target in reads.replicas)
    assert one is not None and two is not None
    one.reachable = False
    assert labels(reads) == ["10.0.0.2:6432/relay", PRIMARY]
    two.lag = 1.5
    assert labels(reads) == [PRIMARY]
    two.lag = 0.0
    assert labels(reads, after=99.0) == ["10.0.0.2:6432/relay", PRIMARY]
    assert labels(reads, after=100.0) == [PRIMARY]  # wrote after its last sample


async def test_a_failed_replica_is_skipped_at_once() -> None:
    reads = router()
    current(reads)
    reads.failed(reads.replicas[0])
    assert labels(reads) == ["10.0.0.2:6432/relay", PRIMARY]
    await reads.close()


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (psycopg.OperationalError("server closed the connection unexpectedly"), True),
        (psycopg.errors.AdminShutdown("terminating connection"), True),
        (psycopg.errors.SerializationFailure("conflict with recovery"), True),
        (ConnectionRefusedError(), True),
        (psycopg.errors.QueryCanceled("statement timeout"), False),
        (psycopg.errors.SyntaxError("bug"), False),
        (ValueError("bug"), False),
    ],
)
def test_what_is_retried_elsewhere(error: BaseException, retry: bool) -> None:
    assert _retryable(error) is retry


def test_replica_urls_come_from_the_environment_as_json() -> None:
    env = {"RELAY_DATABASE__REPLICA_URLS": '["' + REPLICAS[0] + '"]'}
    assert load_settings(env=env).database.replica_urls == [REPLICAS[0]]
    with pytest.raises(ConfigError, match="replica_urls"):
        load_settings(env={"RELAY_DATABASE__REPLICA_URLS": '["redis://x"]'})
