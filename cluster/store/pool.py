"""The psycopg async connection pools each worker owns: one for queries, one per writing job.

Queries cannot take the writer's or the outbox's connections: each has its own pool (issue 13:
with one shared pool, a flood of slow COUNTs held every connection and EVENT -> OK p95 went from
4 ms to 1.5 s). Connections per worker: database.pool_max (queries) + database.writer_lanes
(group commit) + 1 (claim outbox, only with payments on).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from cluster.config import DatabaseSettings
from cluster.store.warmup import warm_session

# Every relay query stops after `limit` rows; starting parallel workers costs milliseconds,
# more than such a query takes on its own.
SESSION_OPTIONS = "-c max_parallel_workers_per_gather=0"

_STATEMENT_TIMEOUT: ContextVar[int | None] = ContextVar("statement_timeout_ms", default=None)


@contextlib.contextmanager
def statement_timeout(milliseconds: int) -> Iterator[None]:
    """Store calls made inside this block (in this task) run under `milliseconds` instead of the
    query pool's session timeout: COUNT shares the query pool with REQ but gets its own budget."""
    token = _STATEMENT_TIMEOUT.set(milliseconds)
    try:
        yield
    finally:
        _STATEMENT_TIMEOUT.reset(token)


class QueryPool(AsyncConnectionPool[AsyncConnection[Any]]):
    """The pool REQ and COUNT share, honouring `statement_timeout` blocks.

    Inside such a block a connection is lent inside a transaction whose first statement is
    `set_config('statement_timeout', ..., true)` (SET LOCAL): the timeout ends with the
    transaction, whatever happens to the statement (a cancelled or timed-out COUNT rolls back),
    so the connection always returns to the pool with the session's REQ timeout. A session-wide
    `SET` would need a second `SET` afterwards that a failure could skip, leaking the COUNT's
    budget into the next REQ. The store code stays unaware of which class of query it serves.
    """

    @contextlib.asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[AsyncConnection[Any]]:
        milliseconds = _STATEMENT_TIMEOUT.get()
        async with super().connection(timeout) as conn:
            if milliseconds is None:
                yield conn
                return
            async with conn.transaction():
                await conn.execute(
                    "SELECT set_config('statement_timeout', %s, true)", (str(milliseconds),)
                )
                yield conn


def _options(timeout_ms: int) -> str:
    return f"-c statement_timeout={timeout_ms} {SESSION_OPTIONS}"


def network_kwargs(settings: DatabaseSettings) -> dict[str, int]:
    """libpq parameters that bound every wait on a silent server by database.network_timeout_ms
    (tests/netns: a partition from PostgreSQL otherwise left EVENTs unanswered for as long as
    TCP retransmits): unacknowledged data (tcp_user_timeout), connecting, and an idle peer
    (keepalives, probing after a third of the timeout)."""
    ms = settings.network_timeout_ms
    if not ms:
        return {}
    seconds = max(1, ms // 1000)
    return {
        "tcp_user_timeout": ms,
        "connect_timeout": seconds,
        "keepalives": 1,
        "keepalives_idle": max(1, seconds // 3),
        "keepalives_interval": max(1, seconds // 6),
        "keepalives_count": 3,
    }


def create_pool(
    settings: DatabaseSettings, *, name: str = "relay", warm: bool = False
) -> QueryPool:
    """The query pool (REQ, COUNT, pricing, purge), not yet open: `await pool.open()` later.

    Autocommit is on so reads never sit in an open transaction; a batch of events is saved by one
    statement, which is then its own transaction (PostgresBatchSaver relies on this).
    The statement timeout (database.query_timeout_ms) is set per session so one bad query cannot
    pin the pool. Parallel query is off for these sessions (SESSION_OPTIONS). With `warm`, each
    new connection runs the common REQ shapes once before it serves (cluster/store/warmup.py).
    """
    return QueryPool(
        settings.url,
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        timeout=settings.pool_timeout,
        name=name,
        open=False,
        configure=warm_session if warm else None,
        kwargs={
            "autocommit": True,
            "options": _options(settings.query_timeout_ms),
            "application_name": f"relay-cluster-{name}",
            **network_kwargs(settings),
        },
    )


def create_write_pool(settings: DatabaseSettings, *, size: int, name: str) -> AsyncConnectionPool:
    """A fixed pool of `size` connections for one writing job (the group-commit lanes: one each;
    the outbox: one), under database.write_timeout_ms. Not warmed: writers run no REQ shapes."""
    return AsyncConnectionPool(
        settings.url,
        min_size=size,
        max_size=size,
        timeout=settings.pool_timeout,
        name=name,
        open=False,
        kwargs={
            "autocommit": True,
            "options": _options(settings.write_timeout_ms),
            "application_name": f"relay-cluster-{name}",
            **network_kwargs(settings),
        },
    )
