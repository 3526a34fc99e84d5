"""What a filter costs the relay: database rows for REQ/COUNT, matching work for a subscription.

Pure estimates with no I/O, so the relay can price a query before it runs it
(cluster/relay/budgets.py charges them to the client's address). The unit is "rows the
database may touch", roughly: a REQ filter returns at most `limit` rows, but every value of
its driving list (authors, a tag's values) is one more index range to walk, a filter no index
narrows may read many rows for each one it returns, and full-text search ranks every match
before it can pick the best. A COUNT reads every matching row, whatever its limit.

The exact numbers are weights, not a cost model of PostgreSQL; what matters is the order:
`{"ids": [x]}` is nearly free, `{"kinds": [1], "limit": 500}` is a few hundred, and 500 authors
or `{}` with a big limit are the expensive end that a budget should notice.
"""

from __future__ import annotations

from collections.abc import Iterable

from cluster.nostr.filters import Filter

WIDE_SCAN_FACTOR = 4
"""Rows read per row returned when no index narrows the filter (kinds only, or nothing)."""
PROBE_WEIGHT = 0.1
"""Extra cost per driving value, as a fraction of the limit (500 authors: 51 x the limit)."""
SEARCH_FACTOR = 8
"""Full-text search: every match is ranked before the best `limit` are known."""
COUNT_ROWS = 2_000
"""Rows a COUNT is assumed to read per driving value (it reads every match)."""
WIDE_COUNT_ROWS = 50
"""A COUNT no index narrows is answered from the planner's estimate: cheap, but not free."""
MIN_COST = 1


def is_wide(flt: Filter) -> bool:
    """True when no id, author or tag narrows the filter: every incoming event of its kinds
    (or every event) must be matched against it, and its stored query walks a time index."""
    return flt.ids is None and flt.authors is None and not flt.tags


def _probes(flt: Filter) -> int:
    """Index ranges the query walks: the values of the most selective list it is driven by."""
    if flt.ids is not None:
        return len(flt.ids)
    if flt.authors is not None:
        return len(flt.authors)
    if flt.tags:
        return min(len(values) for _, values in flt.tags)
    return 1


def req_cost(filters: Iterable[Filter]) -> int:
    """Estimated rows the stored part of a REQ touches (each filter keeps its own limit)."""
    total = 0
    for flt in filters:
        if not flt.can_match:
            continue
        if flt.ids is not None:
            total += len(flt.ids)  # a primary-key lookup each, whatever the limit
            continue
        rows = flt.limit * (1 + PROBE_WEIGHT * _probes(flt))
        if flt.search is not None:
            rows *= SEARCH_FACTOR
        elif is_wide(flt):
            rows *= WIDE_SCAN_FACTOR
        total += int(rows)
    return max(total, MIN_COST)


def count_cost(filters: Iterable[Filter]) -> int:
    """Estimated rows a COUNT touches: every match, so its limit does not bound it."""
    total = 0
    for flt in filters:
        if not flt.can_match:
            continue
        if flt.ids is not None:
            total += len(flt.ids)
        elif flt.search is not None:
            total += COUNT_ROWS * SEARCH_FACTOR
        elif is_wide(flt):
            total += WIDE_COUNT_ROWS
        else:
            total += COUNT_ROWS * _probes(flt)
    return max(total, MIN_COST)


def wide_filters(filters: Iterable[Filter]) -> int:
    """Filters of a subscription that the live index must test against most incoming events."""
    return sum(1 for flt in filters if flt.can_match and is_wide(flt))
