"""The archive tier: which reads reach `archived_events`, and the batches that move events there.

Events of the kinds in `archive.horizons` older than their kind's horizon move from `events`
to `archived_events` (migration 010) in short transactions (functions/090_archive_batch.sql):
the hot table and its indexes stay the size of the recent past, which is what most REQs read.
A read whose time range can reach past the smallest horizon of its kinds reads both tiers
(cluster/store/sql.py); every other read runs exactly the SQL it ran before the archive.

One runner cluster-wide: every worker's `ArchiveRunner` tries a session-level advisory lock on
its own connection each interval (pg_try_advisory_lock), and only the one that gets it moves,
releasing it when its round ends; if that worker dies mid-round, its session ends and the lock
goes with it. `relay-cluster archive` waits for the same lock (cluster/tools/archive.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import msgspec
import psycopg

from cluster.nostr.filters import Filter

log = logging.getLogger(__name__)

CLOCK_MARGIN = 3600
"""Seconds a reader's clock may lag the archiver's: a `since` within this of a horizon still
reads the archive. Horizons are days, so the fast path loses an hour of them at most."""

ARCHIVE_LOCK_KEY = 0x7265_6C61_7961_7263  # "relayarc": the runner's session advisory lock
BATCH_SQL = "SELECT relay_archive_batch(%s, %s, %s)"
TRY_LOCK_SQL = "SELECT pg_try_advisory_lock(%s)"
UNLOCK_SQL = "SELECT pg_advisory_unlock(%s)"
MAX_BATCHES_PER_RUN = 1000
"""Batches one run moves at most (5,000,000 events at the default batch size), so a first run
on a large store ends and starts again at the next interval instead of running for hours."""


class ArchiveScope(msgspec.Struct, frozen=True):
    """The archived kinds and their horizons (seconds), as the read path needs them."""

    horizons: Mapping[int, int]

    def reaches(self, flt: Filter, now: int) -> bool:
        """Whether `flt` can match an archived event: its kinds (all kinds when it names none)
        include an archived kind, and its `since` is older than that kind's horizon. NIP-50
        search reads `events` only (its index is there)."""
        if flt.search is not None:
            return False
        boundary = self.boundary(flt, now)
        return boundary is not None and (flt.since is None or flt.since < boundary)

    def boundary(self, flt: Filter, now: int) -> int | None:
        """Every archived event `flt` can match was created before this (None: there are none,
        the filter names no archived kind)."""
        kinds = self.horizons.keys() if flt.kinds is None else set(flt.kinds) & self.horizons.keys()
        if not kinds:
            return None
        return now - min(self.horizons[kind] for kind in kinds) + CLOCK_MARGIN


def archive_scope(horizons: Mapping[int, int]) -> ArchiveScope | None:
    """The scope of archive.horizons, or None when nothing is archived (reads stay as ever)."""
    return ArchiveScope(dict(horizons)) if horizons else None


async def archive_batch(
    conn: psycopg.AsyncConnection[Any], kind: int, before: int, batch: int
) -> int:
    """Move up to `batch` events of `kind` created before `before`, in one transaction."""
    async with conn.transaction():
        cursor = await conn.execute(BATCH_SQL, (kind, before, batch))
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def archive_now(
    conn: psycopg.AsyncConnection[Any],
    horizons: Mapping[int, int],
    batch: int,
    now: int | None = None,
    max_batches: int = MAX_BATCHES_PER_RUN,
) -> dict[int, int]:
    """Move every event past its kind's horizon (up to `max_batches` batches per kind), batch
    after batch, each committed alone; returns how many moved per kind."""
    now = int(time.time()) if now is None else now
    moved: dict[int, int] = {}
    for kind, horizon in sorted(horizons.items()):
        moved[kind] = 0
        for _ in range(max_batches):
            count = await archive_batch(conn, kind, now - horizon, batch)
            moved[kind] += count
            if count < batch:
                break
            await asyncio.sleep(0)  # let the worker's other tasks run between batches
    return moved


class ArchiveRunner:
    """The scheduled archive of one worker: a round runs only while it holds the cluster-wide
    lock, so two workers never move at the same time."""

    def __init__(
        self, database_url: str, horizons: Mapping[int, int], batch: int, interval: float
    ) -> None:
        self.database_url = database_url
        self.horizons = dict(horizons)
        self.batch = batch
        self.interval = interval
        self.moved = 0  # events this runner moved, for tests and logs
        self.rounds = 0  # rounds in which it held the lock
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _session(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.database_url, autocommit=True)
        return self._conn

    async def run_once(self) -> int | None:
        """One round: move what is due, unless another worker holds the lock (None)."""
        conn = await self._session()
        cursor = await conn.execute(TRY_LOCK_SQL, (ARCHIVE_LOCK_KEY,))
        row = await cursor.fetchone()
        if row is None or not row[0]:
            return None
        try:
            moved = sum((await archive_now(conn, self.horizons, self.batch)).values())
        finally:
            await conn.execute(UNLOCK_SQL, (ARCHIVE_LOCK_KEY,))
        self.rounds += 1
        self.moved += moved
        if moved:
            log.info("archived %d events", moved)
        return moved

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.run_once()
            except Exception as exc:  # keep the schedule whatever happened; a new session next
                log.warning("archive run failed: %s", exc)
                await self.close()

    async def close(self) -> None:
        """Close the session (which releases the lock if a round was cut short)."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
