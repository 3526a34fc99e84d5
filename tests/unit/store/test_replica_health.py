"""Replica lag and read-your-writes bookkeeping (cluster/store/replica_health.py), from tables."""

from __future__ import annotations

import math

import pytest

from cluster.store.replica_health import (
    ReplicaHealth,
    WalHistory,
    WalSample,
    parse_lsn,
    replica_label,
)


def test_lsn_text_is_two_hex_halves() -> None:
    assert parse_lsn("0/0") == 0
    assert parse_lsn("0/16B3748") == 0x16B3748
    assert parse_lsn("1/0") == 1 << 32
    assert parse_lsn("A/FF") == (10 << 32) | 255


def test_label_never_carries_the_password() -> None:
    label = replica_label("postgresql://relay:secret@db-replica:6432/relay")
    assert label == "db-replica:6432/relay"
    assert "secret" not in label


def history(*samples: tuple[float, int]) -> WalHistory:
    wal = WalHistory(keep=100)
    for at, lsn in samples:
        wal.add(WalSample(at, lsn))
    return wal


@pytest.mark.parametrize(
    ("replayed", "lag", "caught_up_at"),
    [
        (300, 0.0, 12.0),  # passed every sample: current
        (250, 13.0 - 12.0, 11.0),  # WAL known at t=12 not replayed: 1 s behind at t=13
        (150, 13.0 - 11.0, 10.0),
        (50, 13.0 - 10.0, -math.inf),  # behind everything we know of
    ],
)
def test_lag_is_the_age_of_the_oldest_wal_not_replayed(
    replayed: int, lag: float, caught_up_at: float
) -> None:
    wal = history((10.0, 100), (11.0, 200), (12.0, 300))
    health = ReplicaHealth("r")
    wal.judge(health, replayed, now=13.0)
    assert health.lag == pytest.approx(lag)
    assert health.caught_up_at == caught_up_at


def test_an_idle_primary_means_no_lag_however_old_its_last_commit() -> None:
    wal = history((0.0, 500), (3600.0, 500))
    health = ReplicaHealth("r")
    wal.judge(health, 500, now=3600.5)
    assert health.lag == 0.0
    assert health.caught_up_at == 3600.0


def test_caught_up_at_never_goes_back() -> None:
    wal = history((10.0, 100), (11.0, 200))
    health = ReplicaHealth("r")
    wal.judge(health, 200, now=11.5)
    wal.samples.clear()
    wal.add(WalSample(12.0, 300))
    wal.judge(health, 200, now=12.5)
    assert health.caught_up_at == 11.0
    assert health.lag == pytest.approx(0.5)


def test_history_keeps_only_its_window() -> None:
    wal = WalHistory(keep=2.0)
    for second in range(10):
        wal.add(WalSample(float(second), second))
    assert [s.at for s in wal.samples] == [7.0, 8.0, 9.0]


def test_no_sample_yet_leaves_the_replica_unusable() -> None:
    health = ReplicaHealth("r")
    health.reachable = True
    WalHistory(keep=1).judge(health, 100, now=1.0)
    assert not health.usable(max_lag=5, after=None)


@pytest.mark.parametrize(
    ("reachable", "lag", "caught_up_at", "after", "usable"),
    [
        (True, 0.0, 10.0, None, True),
        (False, 0.0, 10.0, None, False),  # down
        (True, 6.0, 10.0, None, False),  # lagging past max_lag = 5
        (True, 0.0, 10.0, 9.5, True),  # caught up with WAL sampled after the write
        (True, 0.0, 10.0, 10.0, False),  # the sample may predate the commit
        (True, 0.0, 10.0, 11.0, False),  # wrote after the newest sample: primary
    ],
)
def test_usable(
    reachable: bool, lag: float, caught_up_at: float, after: float | None, usable: bool
) -> None:
    health = ReplicaHealth("r")
    health.reachable, health.lag, health.caught_up_at = reachable, lag, caught_up_at
    assert health.usable(max_lag=5, after=after) is usable
