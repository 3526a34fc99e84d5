"""The psycopg async connection pool each worker owns (sized from the settings)."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from cluster.config import DatabaseSettings


def create_pool(settings: DatabaseSettings, *, name: str = "relay") -> AsyncConnectionPool:
    """A pool that is not yet open: `await pool.open()` in the owner's start-up.

    Autocommit is on so reads never sit in an open transaction; writes open one explicitly.
    The statement timeout is set per connection so one bad query cannot pin the pool.
    """
    return AsyncConnectionPool(
        settings.url,
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        timeout=settings.pool_timeout,
        name=name,
        open=False,
        kwargs={
            "autocommit": True,
            "options": f"-c statement_timeout={settings.statement_timeout_ms}",
            "application_name": f"relay-cluster-{name}",
        },
    )
