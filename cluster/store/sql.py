"""Filter → SQL, as pure functions: parameters only, one statement per REQ (no N+1).

Every value travels as a bound parameter; only fixed fragments are concatenated. Tested from a
table of cases without a database (tests/unit/store/test_sql.py) and differentially against
`Filter.matches` with a database (tests/integration/test_store_differential.py).

Access paths, by what a filter names (first match wins):
- ids, or a single author: one scan of events (primary key, or the author's time index);
- several authors (a follow feed), or several kinds: a LATERAL scan per key picks each key's
  newest ids, the newest `limit` of those are then read whole (`_newest_ids`);
- tags: the event_tags B-tree (tag value, created_at DESC) yields the newest tagged events
  first, joined to events for every other condition (and, for one value, for the rows
  themselves); several values scan one after another;
- otherwise: one scan of events in time order.
A NIP-50 `search` filter goes to cluster/store/search.py instead: its matches come from the
stored documents (the GIN index for a rare word, the time index for a common one, an author's
own index for an author's events), the newest hundred of them ranked by relevance.

The archive tier (cluster/store/archive.py): a filter that can reach archived events (its kinds
and `since`, `ArchiveScope.reaches`) runs its plan on both tiers, `events`/`event_tags` and
`archived_events`/`archived_event_tags`, as a UNION ALL (an event is in one tier only) under
the same order and limit; the archive branch runs only when the live tier's matches do not
already fill the limit with events newer than anything archived. Every other filter gets
exactly the SQL it got before the archive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from cluster.nostr.filters import Filter
from cluster.store.archive import ArchiveScope
from cluster.store.search import DEFAULT_CONFIG, search_condition, search_select
from cluster.store.text import pg_text

ORDER = "ORDER BY created_at DESC, id"
TAG_ORDER = "ORDER BY event_created_at DESC, event_id"
# What a REQ reads per event: the JSON to send, and when it was stored (an event stored moments
# ago may still be on its way to this worker's subscriptions through the fan-out).
RESULT = "raw, stored_at"
LATERAL_COLUMNS = {"pubkey": "bytea", "kind": "integer"}


class Tables(NamedTuple):
    """One tier: its events table and its tag rows (migrations 001, 004, 010)."""

    events: str
    tags: str


LIVE = Tables("events", "event_tags")
ARCHIVE = Tables("archived_events", "archived_event_tags")
# What each tier's branch of a two-tier REQ yields: enough to order and limit the union.
TIERED = f"id, created_at, {RESULT}"


def _values(column: str, flt: Filter) -> list[Any] | None:
    if column == "id" and flt.ids is not None:
        return sorted(bytes.fromhex(value) for value in flt.ids)
    if column == "pubkey" and flt.authors is not None:
        return sorted(bytes.fromhex(value) for value in flt.authors)
    if column == "kind" and flt.kinds is not None:
        return sorted(flt.kinds)
    return None


def _lateral_column(flt: Filter) -> str | None:
    """The column to scan per value, or None when another plan is the better one."""
    if flt.ids is not None:
        return None
    if flt.authors is not None:
        return "pubkey" if len(flt.authors) > 1 else None
    if flt.kinds is not None and not flt.tags and len(flt.kinds) > 1:
        return "kind"
    return None


def tag_driver(flt: Filter) -> list[str] | None:
    """The `letter:value`s whose event_tags rows drive the scan (the letter with fewest values),
    or None when ids or authors make a better start."""
    if not flt.tags or flt.ids is not None or flt.authors is not None:
        return None
    letter, values = min(flt.tags, key=lambda item: len(item[1]))
    return sorted(pg_text(f"{letter}:{value}") for value in values)


def filter_conditions(
    flt: Filter, now: int, *, per_key: str | None = None, search_config: str = DEFAULT_CONFIG
) -> tuple[str, list[Any]]:
    """The WHERE clause of one filter on events, expired events excluded (NIP-40).

    A single value is compared with `=` (the planner then uses the index order); several with
    `= ANY(array)`. `per_key` names the column a LATERAL scan binds to `k.v` instead. Tag
    conditions test events.tagvalues, which needs no index: the access path comes from
    event_tags (see `filter_select` and `build_count`). A NIP-50 search adds its full-text
    match in `search_config` (cluster/store/search.py), so no caller can drop it by mistake.
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
    _add_time_bounds(flt, "created_at", clauses, params)
    for letter, values in flt.tags:
        clauses.append("tagvalues && %s::text[]")
        params.append(sorted(pg_text(f"{letter}:{value}") for value in values))
    match, match_params = search_condition(flt, search_config)
    if match:
        clauses.append(match)
        params.extend(match_params)
    return " AND ".join(clauses), params


def _tag_row_conditions(flt: Filter) -> tuple[str, list[Any]]:
    """Conditions event_tags can check from its own index before any event row is read."""
    clauses: list[str] = []
    params: list[Any] = []
    kinds = _values("kind", flt)
    if kinds is not None:
        clauses.append("event_kind = ANY(%s::integer[])")
        params.append(kinds)
    _add_time_bounds(flt, "event_created_at", clauses, params)
    return "".join(f" AND {clause}" for clause in clauses), params


def _add_time_bounds(flt: Filter, column: str, clauses: list[str], params: list[Any]) -> None:
    """`since` and `until` (both inclusive, NIP-01) on `column`."""
    if flt.since is not None:
        clauses.append(f"{column} >= %s")
        params.append(flt.since)
    if flt.until is not None:
        clauses.append(f"{column} <= %s")
        params.append(flt.until)


def _newest_ids(key_type: str, scan: str, *, distinct: bool) -> str:
    """Events whose ids are the newest `limit` found by a per-key LATERAL `scan` (id, created_at).

    Sorting only ids and timestamps, then reading `limit` whole rows, keeps a feed over many
    keys from dragging every candidate's JSON through the sort. `distinct` drops an event
    found under two keys (an event tagged with two of the asked values).
    """
    pick = "DISTINCT " if distinct else ""
    return (
        f"id = ANY(ARRAY(SELECT id FROM (SELECT {pick}m.id, m.created_at"
        f" FROM unnest(%s::{key_type}[]) AS k(v) CROSS JOIN LATERAL ({scan}) AS m"
        f" ORDER BY m.created_at DESC, m.id LIMIT %s) AS newest))"
    )


def filter_select(
    flt: Filter,
    now: int,
    columns: str,
    search_config: str = DEFAULT_CONFIG,
    tables: Tables = LIVE,
) -> tuple[str, list[Any]]:
    """One filter's newest `limit` events (a search filter's best), as `columns` of events
    (of `tables`' tier; search reads the live tier only)."""
    if flt.search is not None:
        where, params = filter_conditions(flt, now, search_config=search_config)
        return search_select(flt, where, params, columns, search_config)
    driver = tag_driver(flt)
    if driver is not None:
        where, params = filter_conditions(flt, now)
        tag_where, tag_params = _tag_row_conditions(flt)
        scan = (
            f"SELECT {{select}} FROM {tables.tags}"
            f" JOIN {tables.events} ON id = event_id"
            f" WHERE tagvalue = {{key}}{tag_where} AND {where}"
            f" {TAG_ORDER} LIMIT %s"
        )
        scan_params = [*tag_params, *params, flt.limit]
        if len(driver) == 1:
            # One value: the tag scan is already in the final order, so it reads the rows too
            # (`columns` name only events' columns, none of which event_tags shares).
            return scan.format(select=columns, key="%s"), [driver[0], *scan_params]
        ids = scan.format(select="event_id AS id, event_created_at AS created_at", key="k.v")
        newest = _newest_ids("text", ids, distinct=True)
        key_params = [driver, *scan_params, flt.limit]
        return f"SELECT {columns} FROM {tables.events} WHERE {newest} {ORDER}", key_params
    column = _lateral_column(flt)
    if column is None:
        where, params = filter_conditions(flt, now)
        sql = f"SELECT {columns} FROM {tables.events} WHERE {where} {ORDER} LIMIT %s"
        return sql, [*params, flt.limit]
    where, params = filter_conditions(flt, now, per_key=column)
    scan = f"SELECT id, created_at FROM {tables.events} WHERE {where} {ORDER} LIMIT %s"
    newest = _newest_ids(LATERAL_COLUMNS[column], scan, distinct=False)
    sql = f"SELECT {columns} FROM {tables.events} WHERE {newest} {ORDER}"
    return sql, [_values(column, flt), *params, flt.limit, flt.limit]


def reaches_archive(flt: Filter, now: int, archive: ArchiveScope | None) -> bool:
    """Whether `flt` reads the archive tier too (never when nothing is archived)."""
    return archive is not None and archive.reaches(flt, now)


def tiered_select(
    flt: Filter,
    now: int,
    columns: str,
    search_config: str = DEFAULT_CONFIG,
    archive: ArchiveScope | None = None,
) -> tuple[str, list[Any]]:
    """`filter_select`, over both tiers when the filter can reach the archive: each tier's
    newest `limit`, then the newest `limit` of both (`columns` must be among TIERED's).

    Every archived match is older than the scope's boundary, so when the live tier alone has
    `limit` matches at or after it, the archive cannot change the answer and is not read at all
    (a one-time filter: a hot note's reactions, a busy feed). Measured in docs/OPERATIONS.md.
    """
    boundary = archive.boundary(flt, now) if archive is not None else None
    if boundary is None or not reaches_archive(flt, now, archive):
        return filter_select(flt, now, columns, search_config)
    live, live_params = filter_select(flt, now, TIERED, search_config)
    old, old_params = filter_select(flt, now, TIERED, search_config, ARCHIVE)
    needed = "(SELECT count(*) FROM live WHERE created_at >= %s) < %s"
    sql = (
        f"WITH live AS MATERIALIZED ({live}) SELECT {columns} FROM (SELECT {TIERED} FROM live"
        f" UNION ALL SELECT {TIERED} FROM ({old}) AS archived WHERE {needed}) AS tiers"
        f" {ORDER} LIMIT %s"
    )
    return sql, [*live_params, *old_params, boundary, flt.limit, flt.limit]


def queryable(filters: tuple[Filter, ...] | list[Filter]) -> list[Filter]:
    """Filters that can return stored events (limit 0 or an empty list return nothing)."""
    return [flt for flt in filters if flt.limit > 0 and flt.can_match]


def build_select(
    filters: tuple[Filter, ...] | list[Filter],
    now: int,
    search_config: str = DEFAULT_CONFIG,
    archive: ArchiveScope | None = None,
) -> tuple[str, list[Any]]:
    """One statement returning (raw, stored_at) for the union of the filters, newest first.

    NIP-01: each filter's limit applies to that filter; ties on created_at go to the lowest id.
    A lone search filter's events come by relevance (NIP-50); in a union of several filters,
    each search filter picks its most relevant `limit`, and the union is sent newest first.
    Raises ValueError when no filter can match (the caller skips the query and sends EOSE).
    `archive`: the archive tier's scope, None when nothing is archived.
    """
    usable = queryable(filters)
    if not usable:
        raise ValueError("no filter can match stored events")
    if len(usable) == 1:
        return tiered_select(usable[0], now, RESULT, search_config, archive)
    parts: list[str] = []
    params: list[Any] = []
    for flt in usable:
        sql, filter_params = tiered_select(flt, now, TIERED, search_config, archive)
        parts.append(f"({sql})")
        params.extend(filter_params)
    return f"SELECT {RESULT} FROM ({' UNION '.join(parts)}) AS matched {ORDER}", params


def count_conditions(
    flt: Filter, now: int, search_config: str = DEFAULT_CONFIG, tables: Tables = LIVE
) -> tuple[str, list[Any]]:
    """`filter_conditions`, plus the tag rows' lookup (of `tables`' tier) that gives a tag
    filter an index (and a search filter's match)."""
    where, params = filter_conditions(flt, now, search_config=search_config)
    driver = tag_driver(flt)
    if driver is None:
        return where, params
    tagged = f"id IN (SELECT event_id FROM {tables.tags} WHERE tagvalue = ANY(%s::text[]))"
    return f"{tagged} AND {where}", [driver, *params]


def hidden_conditions(
    flt: Filter,
    kinds: frozenset[int],
    now: int,
    search_config: str = DEFAULT_CONFIG,
    tables: Tables = LIVE,
) -> tuple[str, list[Any]]:
    """`count_conditions` without the `kinds` hidden from this filter."""
    where, params = count_conditions(flt, now, search_config, tables)
    if kinds:
        return f"{where} AND kind <> ALL(%s::integer[])", [*params, sorted(kinds)]
    return where, params


def build_count(
    filters: tuple[Filter, ...] | list[Filter],
    now: int,
    hidden_kinds: Sequence[frozenset[int]] | None = None,
    search_config: str = DEFAULT_CONFIG,
    archive: ArchiveScope | None = None,
) -> tuple[str, list[Any]]:
    """NIP-45 COUNT: distinct events matching any filter; limits do not apply to counts.

    `hidden_kinds[i]`, when given, are kinds filter i must not count (DMs the client may not
    read: cluster/nostr/dm_access.py). A filter that reaches the archive counts both tiers (an
    event is in one tier only, so their counts add up).
    """
    hidden = list(hidden_kinds) if hidden_kinds is not None else [frozenset()] * len(filters)
    usable = [(flt, kinds) for flt, kinds in zip(filters, hidden, strict=True) if flt.can_match]
    if not usable:
        raise ValueError("no filter can match stored events")
    parts, params = [], []
    tiered = False
    for flt, kinds in usable:
        where, filter_params = hidden_conditions(flt, kinds, now, search_config)
        part = f"SELECT id FROM events WHERE {where}"
        if reaches_archive(flt, now, archive):
            tiered = True
            old, old_params = hidden_conditions(flt, kinds, now, search_config, ARCHIVE)
            part = f"({part} UNION ALL SELECT id FROM {ARCHIVE.events} WHERE {old})"
            filter_params = [*filter_params, *old_params]
        parts.append(part)
        params.extend(filter_params)
    if len(parts) == 1 and tiered:
        return f"SELECT count(*) FROM {parts[0]} AS matched", params
    if len(parts) == 1:
        return f"SELECT count(*) FROM events WHERE {where}", params
    return f"SELECT count(*) FROM ({' UNION '.join(parts)}) AS matched", params
