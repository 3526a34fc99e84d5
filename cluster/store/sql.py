"""Filter → SQL, as pure functions: parameters only, one statement per REQ (no N+1).

Every value travels as a bound parameter; only fixed fragments are concatenated. Tested from a
table of cases without a database (tests/unit/store/test_sql.py) and differentially against
`Filter.matches` with a database (tests/integration/test_store_differential.py).
"""

from __future__ import annotations

from typing import Any

from cluster.nostr.filters import Filter
from cluster.store.text import pg_text

ORDER = "ORDER BY created_at DESC, id"


def filter_conditions(flt: Filter, now: int) -> tuple[str, list[Any]]:
    """The WHERE clause of one filter, expired events excluded (NIP-40)."""
    clauses = ["(expires_at IS NULL OR expires_at > %s)"]
    params: list[Any] = [now]
    if flt.ids is not None:
        clauses.append("id = ANY(%s::bytea[])")
        params.append(sorted(bytes.fromhex(value) for value in flt.ids))
    if flt.authors is not None:
        clauses.append("pubkey = ANY(%s::bytea[])")
        params.append(sorted(bytes.fromhex(value) for value in flt.authors))
    if flt.kinds is not None:
        clauses.append("kind = ANY(%s::integer[])")
        params.append(sorted(flt.kinds))
    if flt.since is not None:
        clauses.append("created_at >= %s")
        params.append(flt.since)
    if flt.until is not None:
        clauses.append("created_at <= %s")
        params.append(flt.until)
    for letter, values in flt.tags:
        clauses.append("tagvalues && %s::text[]")
        params.append(sorted(pg_text(f"{letter}:{value}") for value in values))
    return " AND ".join(clauses), params


def queryable(filters: tuple[Filter, ...] | list[Filter]) -> list[Filter]:
    """Filters that can return stored events (limit 0 or an empty list return nothing)."""
    return [flt for flt in filters if flt.limit > 0 and flt.can_match]


def build_select(filters: tuple[Filter, ...] | list[Filter], now: int) -> tuple[str, list[Any]]:
    """One statement returning `raw` for the union of the filters, newest first.

    NIP-01: each filter's limit applies to that filter; ties on created_at go to the lowest id.
    Raises ValueError when no filter can match (the caller skips the query and sends EOSE).
    """
    usable = queryable(filters)
    if not usable:
        raise ValueError("no filter can match stored events")
    if len(usable) == 1:
        where, params = filter_conditions(usable[0], now)
        return f"SELECT raw FROM events WHERE {where} {ORDER} LIMIT %s", [*params, usable[0].limit]
    parts: list[str] = []
    params = []
    for flt in usable:
        where, filter_params = filter_conditions(flt, now)
        parts.append(f"(SELECT id, created_at, raw FROM events WHERE {where} {ORDER} LIMIT %s)")
        params.extend([*filter_params, flt.limit])
    return f"SELECT raw FROM ({' UNION '.join(parts)}) AS matched {ORDER}", params


def build_count(filters: tuple[Filter, ...] | list[Filter], now: int) -> tuple[str, list[Any]]:
    """NIP-45 COUNT: distinct events matching any filter; limits do not apply to counts."""
    usable = [flt for flt in filters if flt.can_match]
    if not usable:
        raise ValueError("no filter can match stored events")
    parts, params = [], []
    for flt in usable:
        where, filter_params = filter_conditions(flt, now)
        parts.append(f"SELECT id FROM events WHERE {where}")
        params.extend(filter_params)
    if len(parts) == 1:
        return f"SELECT count(*) FROM events WHERE {where}", params
    return f"SELECT count(*) FROM ({' UNION '.join(parts)}) AS matched", params
