"""The psycopg async connection pool each worker owns (sized from the settings)."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from cluster.config import DatabaseSettings
from cluster.store.warmup import warm_session

# Every relay query stops after `limit` rows; starting parallel workers costs milliseconds,
# more than such a query takes on its own.
SESSION_OPTIONS = "-c max_parallel_workers_per_gather=0"


def create_pool(
    settings: DatabaseSettings, *, name: str = "relay", warm: bool = False
) -> AsyncConnectionPool:
    """A pool that is not yet open: `await pool.open()` in the owner's start-up.

    Autocommit is on so reads never sit in an open transaction; a batch of events is saved by one
    statement, which is then its own transaction (EventStore.save_many relies on this).
    The statement timeout is set per connection so one bad query cannot pin the pool.
    Parallel query is off for these sessions (SESSION_OPTIONS). With `warm`, each new
    connection runs the common REQ shapes once before it serves (cluster/store/warmup.py).
    """
    return AsyncConnectionPool(
        settings.url,
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        timeout=settings.pool_timeout,
        name=name,
        open=False,
        configure=warm_session if warm else None,
        kwargs={
            "autocommit": True,
            "options": f"-c statement_timeout={settings.statement_timeout_ms} {SESSION_OPTIONS}",
            "application_name": f"relay-cluster-{name}",
        },
    )
