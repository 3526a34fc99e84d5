"""Where the store's reads go: a usable read replica, in turn, else the primary.

REQ, COUNT and NIP-77 item lists read through a `ReadRouter` (cluster/store/events.py,
items.py); everything else (writes, payments, the outbox, moderation, archive, purges) keeps
the primary's pools. A replica is used only while its worker's checks (replica_health.py) find
it reachable and within database.replica_max_lag_ms, and, inside a `reading_after(t)` block,
only if it had replayed a primary WAL position sampled after `t`: a connection whose EVENT was
answered at `t` then reads its own write (read-your-writes, docs/SCALING.md).

A replica that fails is skipped at once, until its next successful check: a connection that
cannot be had falls through to the next target, and `run` retries a statement that failed on a
replica's connection once, on another target. With no replicas configured the router is the
primary's pool and adds nothing to a query.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any, NamedTuple, TypeVar

import msgspec
import psycopg
from prometheus_client import Counter
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from cluster import metrics
from cluster.config import DatabaseSettings
from cluster.store.pool import create_pool, network_kwargs
from cluster.store.replica_health import ReplicaChecker, ReplicaHealth, replica_label

T = TypeVar("T")

PRIMARY = "primary"
REPLICA_ACQUIRE_TIMEOUT = 1.0
"""Seconds a read waits for a replica's pooled connection before trying the next target: a
replica that just died must not cost a client the whole database.pool_timeout."""

_READ_AFTER: ContextVar[float | None] = ContextVar("read_after", default=None)


@contextlib.contextmanager
def reading_after(moment: float | None) -> Iterator[None]:
    """Reads in this block (in this task) see every commit made before `moment`
    (time.monotonic()); None: any usable replica will do."""
    token = _READ_AFTER.set(moment)
    try:
        yield
    finally:
        _READ_AFTER.reset(token)


def _retryable(exc: BaseException) -> bool:
    """A lost or refused connection, or a standby cancelling the query for recovery; not a
    statement timeout (that query would be as slow elsewhere)."""
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg.errors.SerializationFailure | OSError)


class Target(NamedTuple):
    label: str
    pool: AsyncConnectionPool[AsyncConnection[Any]]
    health: ReplicaHealth | None
    """None for the primary."""


class ReadRouter:
    """The read side's choice of server, per query."""

    def __init__(
        self,
        primary: AsyncConnectionPool[AsyncConnection[Any]],
        settings: DatabaseSettings | None = None,
    ) -> None:
        """Without settings (or without database.replica_urls): every read on `primary`."""
        self.primary = Target(PRIMARY, primary, None)
        self.replicas: list[Target] = []
        self.checker: ReplicaChecker | None = None
        self.max_lag = 0.0
        self._turn = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._counters: dict[str, Counter] = {}
        if settings is None or not settings.replica_urls:
            return
        self.max_lag = settings.replica_max_lag_ms / 1000
        healths: dict[str, ReplicaHealth] = {}
        for index, url in enumerate(settings.replica_urls, start=1):
            health = ReplicaHealth(replica_label(url))
            replica = msgspec.structs.replace(settings, url=url)
            pool = create_pool(replica, name=f"relay-replica-{index}", warm=True)
            self.replicas.append(Target(health.label, pool, health))
            healths[url] = health
        interval_ms = settings.replica_check_interval_ms
        self.checker = ReplicaChecker(
            settings.url,
            healths,
            interval=interval_ms / 1000,
            max_lag=self.max_lag,
            connect_kwargs=network_kwargs(settings) or {"connect_timeout": 2},
        )

    async def open(self) -> None:
        """Open the replica pools and start checking (the primary's pool is its owner's)."""
        for target in self.replicas:
            await target.pool.open(wait=False)
        if self.checker is not None:
            self._spawn(self.checker.run_forever())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.checker is not None:
            await self.checker.close()
        for target in self.replicas:
            await target.pool.close()

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def targets(self, after: float | None = None) -> list[Target]:
        """Usable replicas, starting with the next in turn, then the primary."""
        usable = [t for t in self.replicas if t.health and t.health.usable(self.max_lag, after)]
        if usable:
            self._turn = (self._turn + 1) % len(usable)
            usable = usable[self._turn :] + usable[: self._turn]
        return [*usable, self.primary]

    def _served(self, target: Target) -> None:
        counter = self._counters.get(target.label)
        if counter is None:  # labels() takes a lock: look each child up once
            counter = self._counters[target.label] = metrics.READ_TARGET.labels(target.label)
        counter.inc()

    def failed(self, target: Target) -> None:
        """Skip a replica whose connection failed until a check finds it again; drop its
        broken pooled connections in the background."""
        if target.health is None:
            return
        target.health.reachable = False
        metrics.REPLICA_USABLE.labels(target.label).set(0)
        self._spawn(_discard_broken(target.pool))

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[tuple[AsyncConnection[Any], Target]]:
        """A connection of the first target that gives one, and which target that was; a
        failure inside the block marks a replica failed (the caller may retry elsewhere)."""
        if not self.replicas:
            async with self.primary.pool.connection() as conn:
                self._served(self.primary)
                yield conn, self.primary
            return
        candidates = self.targets(_READ_AFTER.get())
        async with contextlib.AsyncExitStack() as stack:
            conn, target = await self._acquire(stack, candidates)
            self._served(target)
            try:
                yield conn, target
            except BaseException as exc:
                if _retryable(exc):
                    self.failed(target)
                raise

    async def _acquire(
        self, stack: contextlib.AsyncExitStack, candidates: list[Target]
    ) -> tuple[AsyncConnection[Any], Target]:
        for target in candidates[:-1]:
            try:
                lent = target.pool.connection(timeout=REPLICA_ACQUIRE_TIMEOUT)
                return await stack.enter_async_context(lent), target
            except (PoolTimeout, psycopg.OperationalError, OSError):
                self.failed(target)
        last = candidates[-1]
        return await stack.enter_async_context(last.pool.connection()), last

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """Like a pool's `connection()`: for reads held open (a REQ's server-side cursor)."""
        async with self.lease() as (conn, _target):
            yield conn

    async def run(self, work: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        """`work` on a leased connection; after a connection failure on a replica, once more
        on the next target (the failed replica is skipped by then). The primary's failures
        reach the caller as they always did."""
        ran_on: Target | None = None
        try:
            async with self.lease() as (conn, target):
                ran_on = target
                return await work(conn)
        except Exception as exc:
            if ran_on is None or ran_on.health is None or not _retryable(exc):
                raise
        async with self.lease() as (conn, _target):
            return await work(conn)


async def _discard_broken(pool: AsyncConnectionPool[AsyncConnection[Any]]) -> None:
    """Check a failed replica's idle connections, so none is lent again once it is back."""
    with contextlib.suppress(Exception):
        await pool.check()
