"""How far each read replica is behind the primary, as one worker measures it on its own clock.

Every check samples the primary's WAL position (`pg_current_wal_lsn()`) with the worker's
monotonic time taken *before* the query, then asks each replica how far it has replayed
(`pg_last_wal_replay_lsn()`). A replica whose replay position has passed a sample taken at
time t holds every transaction that committed before t: the newest such t is its
`caught_up_at`, which read-your-writes compares with a connection's last write
(cluster/store/replicas.py). Its lag is how long the oldest WAL it has not replayed has been
known to exist on the primary.

No two servers' clocks are compared, so clock skew cannot make a stale replica look fresh, and
`now() - pg_last_xact_replay_timestamp()` is not used: on an idle primary it grows for hours
while the replica is perfectly current. The resolution is one check interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from typing import Any, NamedTuple

from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict

from cluster import metrics

log = logging.getLogger(__name__)

PRIMARY_LSN_SQL = "SELECT pg_current_wal_lsn()::text"
REPLICA_LSN_SQL = "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text"


def parse_lsn(text: str) -> int:
    """PostgreSQL's `X/Y` (two hex halves of a 64-bit WAL position) as an integer."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def replica_label(url: str) -> str:
    """host:port/dbname of a replica URL: a metric label that never carries a password."""
    params = conninfo_to_dict(url)
    return (
        f"{params.get('host', 'localhost')}:{params.get('port', '5432')}/{params.get('dbname', '')}"
    )


class WalSample(NamedTuple):
    at: float
    """time.monotonic() just before the primary was asked."""
    lsn: int


class ReplicaHealth:
    """What the last checks said about one replica; read by the router on every query."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.reachable = False
        """False until a check succeeds, and again after a failed check or query."""
        self.replayed = 0
        self.caught_up_at = -math.inf
        self.lag = math.inf
        """Seconds; inf until the first check has compared it with a primary sample."""

    def usable(self, max_lag: float, after: float | None) -> bool:
        """May serve a read that must see every commit made before `after` (None: any)?"""
        if not self.reachable or self.lag > max_lag:
            return False
        return after is None or self.caught_up_at > after


class WalHistory:
    """The primary's recent WAL positions, newest last, kept for `keep` seconds."""

    def __init__(self, keep: float) -> None:
        self.keep = keep
        self.samples: deque[WalSample] = deque()

    def add(self, sample: WalSample) -> None:
        self.samples.append(sample)
        while len(self.samples) > 1 and self.samples[0].at < sample.at - self.keep:
            self.samples.popleft()

    def judge(self, health: ReplicaHealth, replayed: int, now: float) -> None:
        """Update `caught_up_at` and `lag` from a replay position read at `now`."""
        health.replayed = replayed
        first_unpassed: WalSample | None = None
        for sample in self.samples:  # oldest first; the primary's position never goes back
            if sample.lsn <= replayed:
                health.caught_up_at = max(health.caught_up_at, sample.at)
            elif first_unpassed is None:
                first_unpassed = sample
        if not self.samples:
            return  # nothing to compare with yet: the replica stays unusable (lag inf)
        health.lag = 0.0 if first_unpassed is None else max(0.0, now - first_unpassed.at)


class ReplicaChecker:
    """One check connection to the primary and to each replica, reopened after a failure.

    Separate from the query pools on purpose: a check must not wait behind a flood of COUNTs,
    and a replica whose check connection fails is skipped at once.
    """

    def __init__(
        self,
        primary_url: str,
        replicas: dict[str, ReplicaHealth],
        *,
        interval: float,
        max_lag: float,
        connect_kwargs: dict[str, Any],
    ) -> None:
        """`replicas`: health by URL (the router reads the same objects)."""
        self.primary_url = primary_url
        self.replicas = replicas
        self.interval = interval
        self.max_lag = max_lag
        self.history = WalHistory(keep=2 * max_lag + 4 * interval)
        self.connect_kwargs = connect_kwargs
        self._connections: dict[str, AsyncConnection[Any]] = {}

    async def _query(self, url: str, sql: str) -> tuple[Any, ...]:
        conn = self._connections.get(url)
        if conn is None or conn.closed:
            conn = await AsyncConnection.connect(
                url,
                autocommit=True,
                application_name="relay-cluster-replica-check",
                **self.connect_kwargs,
            )
            self._connections[url] = conn
        try:
            cursor = await conn.execute(sql)
            row = await cursor.fetchone()
        except BaseException:
            self._connections.pop(url, None)
            with contextlib.suppress(Exception):
                await conn.close()
            raise
        assert row is not None
        return tuple(row)

    async def check(self) -> None:
        """Sample the primary, then every replica at once, each within one interval."""
        at = time.monotonic()
        try:
            async with asyncio.timeout(max(self.interval, 0.5)):
                (lsn,) = await self._query(self.primary_url, PRIMARY_LSN_SQL)
            self.history.add(WalSample(at, parse_lsn(lsn)))
        except Exception as exc:  # replicas are judged on older samples: their lag grows
            log.warning("replica check: primary WAL position unavailable: %s", exc)
        await asyncio.gather(*(self._check_replica(url, h) for url, h in self.replicas.items()))

    async def _check_replica(self, url: str, health: ReplicaHealth) -> None:
        try:
            async with asyncio.timeout(max(self.interval, 0.5)):
                in_recovery, replayed = await self._query(url, REPLICA_LSN_SQL)
        except Exception as exc:
            if health.reachable:
                log.warning("replica %s unreachable, reads go elsewhere: %s", health.label, exc)
            health.reachable = False
        else:
            if not in_recovery or replayed is None:
                # A promoted or unrelated server no longer replays this primary's WAL.
                if health.reachable:
                    log.warning("replica %s is not a standby: no reads from it", health.label)
                health.reachable = False
            else:
                if not health.reachable:
                    log.info("replica %s reachable", health.label)
                health.reachable = True
                self.history.judge(health, parse_lsn(replayed), time.monotonic())
        usable = health.usable(self.max_lag, None)
        metrics.REPLICA_USABLE.labels(health.label).set(1 if usable else 0)
        if math.isfinite(health.lag):
            metrics.REPLICA_LAG.labels(health.label).set(health.lag)

    async def run_forever(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.check()
            except Exception as exc:  # never stop measuring; the next round tries again
                log.warning("replica check failed: %s", exc)
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def close(self) -> None:
        for conn in self._connections.values():
            with contextlib.suppress(Exception):
                await conn.close()
        self._connections.clear()
