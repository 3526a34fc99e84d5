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
# What a REQ reads per event: the JSON to send, and when it was stored (an event stored moments
# ago may still be on its way to this worker's subscriptions through the fan-out).
RESULT = "raw, stored_at"
# Per-key LATERAL scans: for 2+ authors (or 2+ kinds, with no better key), each key is read
# from its own (key, created_at DESC) index in order and only `limit` rows per key are
# considered, so a follow feed never walks the global time index past other authors' events.
LATERAL_COLUMNS = {"pubkey": "bytea", "kind": "integer"}


def _values(column: str, flt: Filter) -> list[Any] | None:
    if column == "id" and flt.ids is not None:
        return sorted(bytes.fromhex(value) for value in flt.ids)
    if column == "pubkey" and flt.authors is not None:
        return sorted(bytes.fromhex(value) for value in flt.authors)
    if column == "kind" and flt.kinds is not None:
        return sorted(flt.kinds)
    return None


def _lateral_column(flt: Filter) -> str | None:
    """The column to scan per value, or None when one plain scan is the better plan."""
    if flt.ids is not None:
        return None
    if flt.authors is not None:
        return "pubkey" if len(flt.authors) > 1 else None
    if flt.kinds is not None and not flt.tags and len(flt.kinds) > 1:
        return "kind"
    return None


def filter_conditions(
    flt: Filter, now: int, *, per_key: str | None = None
) -> tuple[str, list[Any]]:
    """The WHERE clause of one filter, expired events excluded (NIP-40).

    A single value is compared with `=` (the planner then uses the index order); several with
    `= ANY(array)`. `per_key` names the column a LATERAL scan binds to `k.v` instead.
    """
    clauses = ["(expires_at IS NULL OR expires_at > %s)"]
    params: list[Any] = [now]
    for column, cast in (("id", "bytea"), ("pubkey", "bytea"), ("kind", "integer")):
        column_values = _values(column, flt)
        if column == per_key:
            clauses.append(f"{column} = k.v")
        elif column_values is not None and len(column_values) == 1:
            clauses.append(f"{column} = %s")
            params.append(column_values[0])
        elif column_values is not None:
            clauses.append(f"{column} = ANY(%s::{cast}[])")
            params.append(column_values)
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


def filter_select(flt: Filter, now: int, columns: str) -> tuple[str, list[Any]]:
    """One filter's newest `limit` events, as `columns` (a plain or a per-key LATERAL scan)."""
    column = _lateral_column(flt)
    if column is None:
        where, params = filter_conditions(flt, now)
        return f"SELECT {columns} FROM events WHERE {where} {ORDER} LIMIT %s", [*params, flt.limit]
    where, params = filter_conditions(flt, now, per_key=column)
    keys = _values(column, flt)
    sql = (
        f"SELECT {columns} FROM unnest(%s::{LATERAL_COLUMNS[column]}[]) AS k(v) CROSS JOIN LATERAL"
        f" (SELECT id, created_at, raw, stored_at FROM events WHERE {where} {ORDER} LIMIT %s) AS e"
        f" {ORDER} LIMIT %s"
    )
    return sql, [keys, *params, flt.limit, flt.limit]


def queryable(filters: tuple[Filter, ...] | list[Filter]) -> list[Filter]:
    """Filters that can return stored events (limit 0 or an empty list return nothing)."""
    return [flt for flt in filters if flt.limit > 0 and flt.can_match]


def build_select(filters: tuple[Filter, ...] | list[Filter], now: int) -> tuple[str, list[Any]]:
    """One statement returning (raw, stored_at) for the union of the filters, newest first.

    NIP-01: each filter's limit applies to that filter; ties on created_at go to the lowest id.
    Raises ValueError when no filter can match (the caller skips the query and sends EOSE).
    """
    usable = queryable(filters)
    if not usable:
        raise ValueError("no filter can match stored events")
    if len(usable) == 1:
        return filter_select(usable[0], now, RESULT)
    parts: list[str] = []
    params: list[Any] = []
    for flt in usable:
        sql, filter_params = filter_select(flt, now, f"id, created_at, {RESULT}")
        parts.append(f"({sql})")
        params.extend(filter_params)
    return f"SELECT {RESULT} FROM ({' UNION '.join(parts)}) AS matched {ORDER}", params


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
