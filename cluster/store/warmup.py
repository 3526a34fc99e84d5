"""Warm a new database session before a client waits on it.

A fresh PostgreSQL backend loads its catalog caches (the events tables, their indexes, the
functions a plan uses) on first use, and psycopg prepares a statement only after its fifth run:
measured here, a pooled connection's first follow-feed query took 2-3 ms and its first
single-author query 1.5-2 ms, against 1 ms and 0.2 ms once warm. So every connection the relay's
pool opens first runs each common REQ shape once, prepared, with values that match nothing
(a few milliseconds per connection, once). The SQL text of a shape does not depend on its values
(tests/unit/store/test_sql.py), so a client's query of the same shape finds it prepared.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg
from psycopg import AsyncConnection

from cluster.nostr.filters import FilterLimits, parse_filter
from cluster.store.sql import build_select

log = logging.getLogger(__name__)

_NONE = "0" * 64
_NOTHING = "f" * 64


def common_shapes(now: int) -> list[dict[str, Any]]:
    """The REQ shapes clients send most (the bench's query shapes), with values no event has.
    Times are real ones: psycopg picks an integer parameter's type by its size, and a prepared
    statement is only reused for the same types."""
    return [
        {"authors": [_NONE], "limit": 20},
        {"authors": [_NONE], "kinds": [1], "limit": 20},
        {"authors": [_NONE, _NOTHING], "kinds": [1, 6], "limit": 50},
        {"kinds": [1], "limit": 20},
        {"#e": [_NONE], "kinds": [1, 7], "limit": 50},
        {"#p": [_NONE], "limit": 20},
        {"#t": [_NONE], "kinds": [1], "limit": 20},
        {"ids": [_NONE, _NOTHING]},
        {"since": now - 1, "until": now - 1, "limit": 50},
    ]


async def warm_session(conn: AsyncConnection[Any]) -> None:
    """Run every common shape once, prepared (the pool's `configure` callback).

    Only an optimisation: a failure (say, a database whose migrations have not run yet) is
    logged and the connection serves cold; the autocommit session is left idle either way.
    """
    now = int(time.time())
    try:
        for raw in common_shapes(now):
            sql, params = build_select([parse_filter(raw, FilterLimits())], now)
            await conn.execute(sql.encode(), params, prepare=True)
    except psycopg.Error as exc:
        log.warning("session warm-up skipped: %s", exc)
