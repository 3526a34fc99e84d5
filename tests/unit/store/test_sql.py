"""Filter → SQL from a table of cases, without a database: exact text, exact parameters."""

from __future__ import annotations

import re
from typing import Any

import pytest

from cluster.nostr.filters import Filter, FilterLimits, parse_filter
from cluster.store.sql import (
    ORDER,
    RESULT,
    TAG_ORDER,
    build_count,
    build_select,
    filter_conditions,
    queryable,
)

LIMITS = FilterLimits(max_limit=100, default_limit=20, max_values=10)
NOW = 1_700_000_000
ID_A, ID_B = "0a" * 32, "ff" * 32
PK_A, PK_B = "1b" * 32, "02" * 32
EXPIRY = "(expires_at IS NULL OR expires_at > %s)"
INJECTION = "x'; DROP TABLE events;--"


def flt(**raw: Any) -> Filter:
    return parse_filter(raw, LIMITS)


def tag(letter: str, *values: str) -> Filter:
    return parse_filter({f"#{letter}": list(values)}, LIMITS)


# ---- filter_conditions -----------------------------------------------------------------------

CONDITION_CASES: list[tuple[Filter, str, list[Any]]] = [
    (flt(), EXPIRY, [NOW]),
    (
        flt(ids=[ID_B, ID_A]),
        f"{EXPIRY} AND id = ANY(%s::bytea[])",
        [NOW, [bytes.fromhex(ID_A), bytes.fromhex(ID_B)]],
    ),
    # one value: plain equality, so the planner can walk the (key, created_at) index in order
    (flt(ids=[ID_A]), f"{EXPIRY} AND id = %s", [NOW, bytes.fromhex(ID_A)]),
    (flt(authors=[PK_A]), f"{EXPIRY} AND pubkey = %s", [NOW, bytes.fromhex(PK_A)]),
    (flt(kinds=[7]), f"{EXPIRY} AND kind = %s", [NOW, 7]),
    (
        flt(authors=[PK_A, PK_B]),
        f"{EXPIRY} AND pubkey = ANY(%s::bytea[])",
        [NOW, [bytes.fromhex(PK_B), bytes.fromhex(PK_A)]],
    ),
    (flt(kinds=[30023, 1, 7]), f"{EXPIRY} AND kind = ANY(%s::integer[])", [NOW, [1, 7, 30023]]),
    (flt(since=10), f"{EXPIRY} AND created_at >= %s", [NOW, 10]),
    (flt(until=20), f"{EXPIRY} AND created_at <= %s", [NOW, 20]),
    (
        flt(since=10, until=20),
        f"{EXPIRY} AND created_at >= %s AND created_at <= %s",
        [NOW, 10, 20],
    ),
    (tag("e", ID_A), f"{EXPIRY} AND tagvalues && %s::text[]", [NOW, [f"e:{ID_A}"]]),
    (
        tag("t", "b", "a", INJECTION),
        f"{EXPIRY} AND tagvalues && %s::text[]",
        [NOW, ["t:a", "t:b", f"t:{INJECTION}"]],
    ),
    (
        # several letters: one clause each (ANDed), letters in sorted order
        parse_filter({"#t": ["x"], "#e": ["y"]}, LIMITS),
        f"{EXPIRY} AND tagvalues && %s::text[] AND tagvalues && %s::text[]",
        [NOW, ["e:y"], ["t:x"]],
    ),
    (
        parse_filter(
            {
                "ids": [ID_A],
                "authors": [PK_A],
                "kinds": [1],
                "since": 5,
                "until": 6,
                "#p": [PK_B],
                "limit": 3,
            },
            LIMITS,
        ),
        f"{EXPIRY} AND id = %s AND pubkey = %s"
        " AND kind = %s AND created_at >= %s AND created_at <= %s"
        " AND tagvalues && %s::text[]",
        [
            NOW,
            bytes.fromhex(ID_A),
            bytes.fromhex(PK_A),
            1,
            5,
            6,
            [f"p:{PK_B}"],
        ],
    ),
]


@pytest.mark.parametrize(("filter_", "sql", "params"), CONDITION_CASES, ids=repr)
def test_filter_conditions(filter_: Filter, sql: str, params: list[Any]) -> None:
    assert filter_conditions(filter_, NOW) == (sql, params)


# ---- build_select ----------------------------------------------------------------------------

SELECT_ONE = f"SELECT raw, stored_at FROM events WHERE {{}} {ORDER} LIMIT %s"
PART = f"(SELECT id, created_at, raw, stored_at FROM events WHERE {{}} {ORDER} LIMIT %s)"
NEWEST = (
    "id = ANY(ARRAY(SELECT id FROM (SELECT {pick}m.id, m.created_at"
    " FROM unnest(%s::{type}[]) AS k(v) CROSS JOIN LATERAL ({{scan}}) AS m"
    " ORDER BY m.created_at DESC, m.id LIMIT %s) AS newest))"
)
TAGGED = (
    "SELECT {select} FROM event_tags"
    " JOIN events ON id = event_id WHERE tagvalue = {key} AND {where} " + TAG_ORDER + " LIMIT %s"
)
TAG_IDS = "event_id AS id, event_created_at AS created_at"


def keyed(key_type: str, scan: str, *, distinct: bool = False) -> str:
    """A per-key LATERAL select: newest ids first, then the whole rows."""
    pick = "DISTINCT " if distinct else ""
    newest = NEWEST.format(pick=pick, type=key_type).replace("{scan}", scan)
    return f"SELECT raw, stored_at FROM events WHERE {newest} {ORDER}"


SELECT_CASES: list[tuple[list[Filter], str, list[Any]]] = [
    ([flt()], SELECT_ONE.format(EXPIRY), [NOW, 20]),
    ([flt(limit=1)], SELECT_ONE.format(EXPIRY), [NOW, 1]),
    ([flt(limit=10_000)], SELECT_ONE.format(EXPIRY), [NOW, 100]),
    (
        [flt(kinds=[1], limit=5)],
        SELECT_ONE.format(f"{EXPIRY} AND kind = %s"),
        [NOW, 1, 5],
    ),
    # several authors: one ordered scan per author (LATERAL) picks ids and timestamps only,
    # the newest `limit` of those are then read whole
    (
        [flt(authors=[PK_A, PK_B], kinds=[1], limit=4)],
        keyed(
            "bytea",
            f"SELECT id, created_at FROM events WHERE {EXPIRY} AND pubkey = k.v"
            f" AND kind = %s {ORDER} LIMIT %s",
        ),
        [[bytes.fromhex(PK_B), bytes.fromhex(PK_A)], NOW, 1, 4, 4],
    ),
    # several kinds and nothing more selective: one ordered scan per kind
    (
        [flt(kinds=[7, 1], limit=3)],
        keyed(
            "integer",
            f"SELECT id, created_at FROM events WHERE {EXPIRY} AND kind = k.v {ORDER} LIMIT %s",
        ),
        [[1, 7], NOW, 3, 3],
    ),
    # one tag value: the event_tags B-tree in time order, joined to events for the rest and
    # for the rows themselves
    (
        [flt(kinds=[1, 7], limit=5, **{"#e": [ID_A]})],
        TAGGED.format(
            select=RESULT,
            key="%s",
            where=f"event_kind = ANY(%s::integer[]) AND {EXPIRY}"
            " AND kind = ANY(%s::integer[]) AND tagvalues && %s::text[]",
        ),
        [f"e:{ID_A}", [1, 7], NOW, [1, 7], [f"e:{ID_A}"], 5],
    ),
    # two letters: the one with fewer values drives, the other is rechecked on events
    (
        [flt(limit=5, **{"#p": [PK_A, PK_B], "#t": ["x"]})],
        TAGGED.format(
            select=RESULT,
            key="%s",
            where=f"{EXPIRY} AND tagvalues && %s::text[] AND tagvalues && %s::text[]",
        ),
        ["t:x", NOW, [f"p:{PK_B}", f"p:{PK_A}"], ["t:x"], 5],
    ),
    # several values: a scan per value, an event found under two values counted once;
    # since/until bound the tag scan as well
    (
        [flt(since=5, limit=2, **{"#p": [PK_A, PK_B]})],
        keyed(
            "text",
            TAGGED.format(
                select=TAG_IDS,
                key="k.v",
                where=f"event_created_at >= %s AND {EXPIRY} AND created_at >= %s"
                " AND tagvalues && %s::text[]",
            ),
            distinct=True,
        ),
        [[f"p:{PK_B}", f"p:{PK_A}"], 5, NOW, 5, [f"p:{PK_B}", f"p:{PK_A}"], 2, 2],
    ),
    # filters that cannot return anything are dropped before building
    (
        [flt(kinds=[]), flt(limit=0), flt(authors=[PK_A], limit=2), tag("t")],
        SELECT_ONE.format(f"{EXPIRY} AND pubkey = %s"),
        [NOW, bytes.fromhex(PK_A), 2],
    ),
    (
        [flt(authors=[PK_A], limit=2), flt(kinds=[7], since=9)],
        "SELECT raw, stored_at FROM ("
        + PART.format(f"{EXPIRY} AND pubkey = %s")
        + " UNION "
        + PART.format(f"{EXPIRY} AND kind = %s AND created_at >= %s")
        + f") AS matched {ORDER}",
        [NOW, bytes.fromhex(PK_A), 2, NOW, 7, 9, 20],
    ),
    (
        [flt(), flt(limit=3), tag("e", INJECTION)],
        "SELECT raw, stored_at FROM ("
        + " UNION ".join(
            [
                PART.format(EXPIRY),
                PART.format(EXPIRY),
                "("
                + TAGGED.format(
                    select=f"id, created_at, {RESULT}",
                    key="%s",
                    where=f"{EXPIRY} AND tagvalues && %s::text[]",
                )
                + ")",
            ]
        )
        + f") AS matched {ORDER}",
        [NOW, 20, NOW, 3, f"e:{INJECTION}", NOW, [f"e:{INJECTION}"], 20],
    ),
]


@pytest.mark.parametrize(("filters", "sql", "params"), SELECT_CASES, ids=repr)
def test_build_select(filters: list[Filter], sql: str, params: list[Any]) -> None:
    assert build_select(filters, NOW) == (sql, params)
    assert build_select(tuple(filters), NOW) == (sql, params)


# ---- build_count -----------------------------------------------------------------------------

COUNT_CASES: list[tuple[list[Filter], str, list[Any]]] = [
    ([flt()], f"SELECT count(*) FROM events WHERE {EXPIRY}", [NOW]),
    # limits do not apply to counts, so limit 0 still counts
    ([flt(limit=0)], f"SELECT count(*) FROM events WHERE {EXPIRY}", [NOW]),
    (
        [flt(kinds=[]), flt(kinds=[1], limit=1)],
        f"SELECT count(*) FROM events WHERE {EXPIRY} AND kind = %s",
        [NOW, 1],
    ),
    (
        [flt(kinds=[1]), tag("p", PK_A)],
        "SELECT count(*) FROM ("
        f"SELECT id FROM events WHERE {EXPIRY} AND kind = %s"
        " UNION "
        "SELECT id FROM events WHERE id IN (SELECT event_id FROM event_tags"
        f" WHERE tagvalue = ANY(%s::text[])) AND {EXPIRY} AND tagvalues && %s::text[]"
        ") AS matched",
        [NOW, 1, [f"p:{PK_A}"], NOW, [f"p:{PK_A}"]],
    ),
]


@pytest.mark.parametrize(("filters", "sql", "params"), COUNT_CASES, ids=repr)
def test_build_count(filters: list[Filter], sql: str, params: list[Any]) -> None:
    assert build_count(filters, NOW) == (sql, params)


def test_build_count_leaves_out_the_kinds_hidden_from_each_filter() -> None:
    hidden = frozenset({4, 1059})
    sql, params = build_count(
        [flt(kinds=[]), flt(kinds=[1]), flt()], NOW, [hidden, frozenset(), hidden]
    )
    assert sql == (
        "SELECT count(*) FROM ("
        f"SELECT id FROM events WHERE {EXPIRY} AND kind = %s"
        " UNION "
        f"SELECT id FROM events WHERE {EXPIRY} AND kind <> ALL(%s::integer[])"
        ") AS matched"
    )
    assert params == [NOW, 1, NOW, [4, 1059]]


# ---- nothing can match -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "filters",
    [
        [],
        [flt(ids=[])],
        [flt(authors=[]), flt(kinds=[])],
        [tag("t")],
        [flt(since=10, until=9)],
    ],
    ids=repr,
)
def test_nothing_can_match_raises(filters: list[Filter]) -> None:
    assert queryable(filters) == []
    with pytest.raises(ValueError, match="no filter can match"):
        build_select(filters, NOW)
    with pytest.raises(ValueError, match="no filter can match"):
        build_count(filters, NOW)


def test_limit_zero_only_is_not_selectable_but_countable() -> None:
    filters = [flt(limit=0), flt(kinds=[1], limit=0)]
    assert queryable(filters) == []
    with pytest.raises(ValueError):
        build_select(filters, NOW)
    sql, params = build_count(filters, NOW)
    assert sql.startswith("SELECT count(*) FROM (") and params == [NOW, NOW, 1]


# ---- every value is a bound parameter --------------------------------------------------------

HOSTILE = [
    INJECTION,
    "'",
    '"',
    "%s",
    "%(x)s",
    "$1",
    "\\",
    "-- comment",
    "/* c */",
    "e:1",
    ");DELETE FROM events;(",
    "日本語",
    "",
]


def every_filter_shape() -> list[Filter]:
    shapes = [parse_filter({f"#{letter}": HOSTILE}, FilterLimits(max_values=50)) for letter in "tZ"]
    shapes.append(
        parse_filter(
            {
                "ids": [ID_A],
                "authors": [PK_B],
                "kinds": [31337, 65535],
                "since": 123456789,
                "until": 987654321,
                "limit": 77,
                "#q": ["quoted'value"],
            },
            LIMITS,
        )
    )
    return shapes


def leaf_values(params: list[Any]) -> list[Any]:
    values: list[Any] = []
    for param in params:
        values.extend(param if isinstance(param, list) else [param])
    return values


@pytest.mark.parametrize("builder", [build_select, build_count])
def test_no_value_appears_in_the_sql_text(builder: Any) -> None:
    filters = every_filter_shape()
    for chosen in ([filters[0]], [filters[2]], filters):
        sql, params = builder(chosen, NOW)
        assert sql.count("%s") == len(params)
        # Only placeholders, identifiers and fixed keywords: no quotes, no literals.
        assert "'" not in sql and '"' not in sql and "--" not in sql and "$" not in sql
        assert not re.search(r"\d{3,}", sql), sql
        for value in leaf_values(params):
            if isinstance(value, bytes):
                assert value.hex() not in sql
            elif isinstance(value, str):
                text = value.split(":", 1)[1]
                assert not text or text in ("%s", "e:1") or text not in sql, text
            else:
                assert str(value) not in sql
        all_values = leaf_values(params)
        if chosen[0] is filters[0]:
            assert f"t:{INJECTION}" in all_values
        if len(chosen) == 3:
            assert f"Z:{INJECTION}" in all_values
            assert 31337 in all_values and 123456789 in all_values
            assert bytes.fromhex(PK_B) in all_values


def test_sql_text_does_not_depend_on_values() -> None:
    """Same shape (one value or several per list), different values: identical SQL."""
    one = build_select([tag("t", INJECTION, "a"), flt(kinds=[1], since=1)], NOW)
    two = build_select([tag("t", "b", "c"), flt(kinds=[2], since=99)], NOW + 5)
    assert one[0] == two[0]
    assert one[1] != two[1]
