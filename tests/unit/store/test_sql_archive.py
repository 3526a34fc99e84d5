"""The archive tier's SQL, without a database: which filters reach the archive, today's SQL for
those that cannot, both tiers (with matching parameters) for those that can."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.config import ArchiveSettings
from cluster.nostr.filters import Filter, FilterLimits, parse_filter
from cluster.store.archive import CLOCK_MARGIN, ArchiveScope, archive_scope
from cluster.store.counts import build_estimate, build_hll
from cluster.store.items import build_items
from cluster.store.sql import build_count, build_select

LIMITS = FilterLimits(max_limit=100, default_limit=20, max_values=10)
NOW = 1_700_000_000
DAY = 86_400
SCOPE = ArchiveScope({7: 30 * DAY, 1: 90 * DAY})
PK_A, PK_B = "1b" * 32, "02" * 32


def flt(**raw: Any) -> Filter:
    return parse_filter(raw, LIMITS)


REACH_CASES: list[tuple[Filter, bool]] = [
    (flt(), True),  # every kind, all time
    (flt(kinds=[7]), True),
    (flt(kinds=[0, 30023]), False),  # no archived kind
    (flt(kinds=[7], since=NOW - 10 * DAY), False),  # inside the horizon
    (flt(kinds=[7], since=NOW - 30 * DAY + CLOCK_MARGIN), False),
    (flt(kinds=[7], since=NOW - 30 * DAY + CLOCK_MARGIN - 1), True),  # the clock margin
    (flt(kinds=[1], since=NOW - 60 * DAY), False),  # kind 1 archives after 90 days
    (flt(kinds=[1, 7], since=NOW - 60 * DAY), True),  # ... kind 7 after 30
    (flt(since=NOW - 60 * DAY), True),
    (flt(since=NOW - DAY), False),
    (flt(until=NOW - 365 * DAY, kinds=[0]), False),
    (flt(search="hello"), False),  # NIP-50 reads the live tier only
]


@pytest.mark.parametrize(("given", "expected"), REACH_CASES)
def test_which_filters_reach_the_archive(given: Filter, expected: bool) -> None:
    assert SCOPE.reaches(given, NOW) is expected


UNREACHING = [
    flt(kinds=[0]),
    flt(kinds=[7], since=NOW - DAY),
    flt(authors=[PK_A, PK_B], kinds=[3], limit=5),
    flt(**{"#e": ["x", "y"], "kinds": [30023]}),
    flt(since=NOW - 3600),
]
REACHING = [
    flt(),
    flt(kinds=[7]),
    flt(kinds=[1, 7, 30023]),  # a LATERAL scan per kind
    flt(authors=[PK_A]),
    flt(authors=[PK_A, PK_B], limit=3),
    flt(**{"#e": ["x"], "kinds": [7]}),  # one tag value
    flt(**{"#e": ["x", "y"]}),  # several values
    flt(ids=["0a" * 32], until=NOW - DAY),
]


def placeholders_match(sql: str, params: list[Any]) -> bool:
    return sql.count("%s") == len(params)


@pytest.mark.parametrize("given", UNREACHING)
def test_filters_that_cannot_reach_the_archive_get_todays_sql(given: Filter) -> None:
    assert build_select([given], NOW, archive=SCOPE) == build_select([given], NOW)
    assert build_select([given, flt(kinds=[0])], NOW, archive=SCOPE) == build_select(
        [given, flt(kinds=[0])], NOW
    )
    assert build_count([given], NOW, archive=SCOPE) == build_count([given], NOW)
    assert build_items(given, NOW, frozenset(), 9, SCOPE) == build_items(given, NOW, frozenset(), 9)
    assert build_estimate([given], NOW, [frozenset()], SCOPE) == build_estimate(
        [given], NOW, [frozenset()]
    )


@pytest.mark.parametrize("given", REACHING)
def test_filters_that_reach_the_archive_read_both_tiers(given: Filter) -> None:
    sql, params = build_select([given], NOW, archive=SCOPE)
    live, live_params = build_select([given], NOW)
    assert "archived_events" not in live
    # The live branch is today's plan (with the columns the union orders by) ...
    tiered_live = build_select([given, given], NOW)[0].split(") UNION (", 1)[0][
        len("SELECT raw, stored_at FROM ((") :
    ]
    assert sql.startswith(f"WITH live AS MATERIALIZED ({tiered_live}) SELECT raw, stored_at")
    assert sql.endswith(
        " AS archived WHERE (SELECT count(*) FROM live WHERE created_at >= %s) < %s) AS tiers"
        " ORDER BY created_at DESC, id LIMIT %s"
    )
    boundary = SCOPE.boundary(given, NOW)
    assert params[-3:] == [boundary, given.limit, given.limit]
    assert placeholders_match(sql, params)
    # ... and the archive branch the same plan on the archive tables.
    archive_branch = sql.split(" UNION ALL ", 1)[1]
    assert "archived_events" in archive_branch
    assert " events " not in archive_branch.replace("archived_events", "")
    if given.tags:
        assert "archived_event_tags" in archive_branch
    assert len(params) == 2 * len(live_params) + 3

    union, union_params = build_select([given, flt(kinds=[0])], NOW, archive=SCOPE)
    assert union.count("UNION ALL") == 1 and ") UNION (" in union
    assert placeholders_match(union, union_params)

    for hidden in (frozenset(), frozenset({4})):
        count, count_params = build_count([given], NOW, [hidden], archive=SCOPE)
        assert "UNION ALL SELECT id FROM archived_events WHERE" in count
        assert placeholders_match(count, count_params)
        items, items_params = build_items(given, NOW, hidden, 9, SCOPE)
        assert "UNION ALL SELECT created_at, id FROM archived_events" in items
        assert placeholders_match(items, items_params) and items_params[-1] == 10
    counts, counts_params = build_count([given, flt(kinds=[0])], NOW, archive=SCOPE)
    assert placeholders_match(counts, counts_params) and ") UNION SELECT" in counts
    estimate, estimate_params = build_estimate([given], NOW, [frozenset()], SCOPE)
    assert "UNION ALL SELECT 1 FROM archived_events" in estimate
    assert placeholders_match(estimate, estimate_params)
    hll, hll_params = build_hll(given, NOW, 16, archive=SCOPE)
    assert "sum(events)::bigint" in hll and placeholders_match(hll, hll_params)
    assert build_hll(given, NOW, 16) == build_hll(given, NOW, 16, archive=None)


def test_no_horizons_no_scope_and_regular_kinds_only() -> None:
    assert archive_scope({}) is None
    assert ArchiveSettings(horizons={"7": 10}).kind_horizons == {7: 10}
    for kind in ("0", "3", "10002", "20001", "30023"):
        with pytest.raises(ValueError, match="not a regular kind"):
            ArchiveSettings(horizons={kind: 10})
    with pytest.raises(ValueError, match="not a kind"):
        ArchiveSettings(horizons={"x": 10})
