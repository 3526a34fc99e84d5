"""parse_filter on hostile input, and build_select/build_count on every filter it accepts.

parse_filter raises nothing but FilterError. For accepted filters the SQL carries only `%s`
placeholders, one per parameter, and no value: the statement text depends on which fields a
filter has, never on what they hold (checked by rebuilding it from blanked-out filters).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.nostr.filters import Filter, FilterError, FilterLimits, parse_filter
from cluster.store.sql import build_count, build_select, queryable

LIMITS = FilterLimits(max_limit=100, default_limit=20, max_values=6)
NOW = 1_700_000_000
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Values a careless SQL builder would leak into the statement.
HOSTILE = ["'", '"', "%s", "%", "$1", "?", ";", "--", "x'; DROP TABLE events;--", "\\", "\x00"]

hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
text = st.one_of(st.text(max_size=40), st.sampled_from(HOSTILE))
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2**53 - 1, 2**53, True, False]),
    st.floats(allow_nan=False),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, text, hex64),
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=20,
)
letters = st.sampled_from("abeEpPtZzd")
tag_keys = letters.map(lambda letter: f"#{letter}")
valid_filter = st.fixed_dictionaries(
    {},
    optional={
        "ids": st.lists(hex64, max_size=6),
        "authors": st.lists(hex64, max_size=6),
        "kinds": st.lists(st.integers(min_value=0, max_value=65535), max_size=6),
        "since": st.integers(min_value=0, max_value=2**53 - 1),
        "until": st.integers(min_value=0, max_value=2**53 - 1),
        "limit": st.integers(min_value=0, max_value=10**9),
    },
).flatmap(
    lambda base: st.dictionaries(tag_keys, st.lists(text, max_size=6), max_size=4).map(
        lambda tag_part: {**tag_part, **base}
    )
)
any_filter = st.one_of(
    valid_filter,
    st.tuples(
        valid_filter,
        st.one_of(
            st.sampled_from(["ids", "authors", "kinds", "since", "until", "limit", "#e", "#"]),
            st.text(max_size=6),
        ),
        json_values,
    ).map(lambda p: {**p[0], p[1]: p[2]}),
    json_values,
)


def parse_or_none(raw: Any) -> Filter | None:
    try:
        return parse_filter(raw, LIMITS)
    except FilterError as exc:
        assert str(exc)
        return None


def blank(flt: Filter, index: int) -> Filter:
    """The same shape with every value replaced: what the SQL text may depend on."""

    def blank_set(values: frozenset[Any] | None, filler: Any) -> frozenset[Any] | None:
        """Same number of values (the SQL shape may depend on one vs several), new content."""
        if values is None:
            return None
        return frozenset(filler(i) for i in range(len(values)))

    since, until = flt.since, flt.until
    if since is not None and until is not None:
        since, until = (1, 0) if since > until else (0, 0)  # keep an empty window empty
    else:
        since = None if since is None else 0
        until = None if until is None else 0
    return Filter(
        ids=blank_set(flt.ids, lambda i: f"{index:032x}{i:032x}"),
        authors=blank_set(flt.authors, lambda i: f"{index + 1:032x}{i:032x}"),
        kinds=blank_set(flt.kinds, lambda i: index * 1000 + i),
        tags=tuple(
            # as many values as before: one value and several are different access paths
            (chr(ord("a") + position), frozenset(f"v{i}" for i in range(len(values))))
            for position, (_, values) in enumerate(flt.tags)
        ),
        since=since,
        until=until,
        limit=min(flt.limit, 1),
    )


def check_statement(sql: str, params: list[Any]) -> None:
    """Placeholders only, one per parameter, nothing that could be a quoted or escaped value.

    (That no value text is in the SQL follows from the statement equalling the one built from
    blanked-out filters, checked by the callers.)
    """
    assert sql.count("%s") == len(params)
    stripped = sql.replace("%s", "")
    assert "%" not in stripped and "$" not in stripped and "?" not in stripped
    assert "'" not in sql and '"' not in sql and ";" not in sql and "--" not in sql
    assert "\\" not in sql and "\x00" not in sql
    for param in params:
        if isinstance(param, list):
            assert all(isinstance(item, bytes | int | str) for item in param)
            assert all("\x00" not in item for item in param if isinstance(item, str))
        elif isinstance(param, str):  # one tag value compared with `=`
            assert "\x00" not in param
        else:  # a limit, a timestamp, or one id/pubkey/kind compared with `=`
            assert isinstance(param, int | bytes) and not isinstance(param, bool)


@FUZZ
@given(any_filter)
def test_parse_filter_raises_only_filter_errors(raw: Any) -> None:
    flt = parse_or_none(raw)
    if flt is not None:
        assert 0 <= flt.limit <= LIMITS.max_limit
        for values in (flt.ids, flt.authors, flt.kinds):
            assert values is None or len(values) <= LIMITS.max_values


@FUZZ
@given(st.lists(any_filter, min_size=1, max_size=4))
def test_sql_has_only_placeholders_and_no_values(raws: list[Any]) -> None:
    filters = [flt for flt in map(parse_or_none, raws) if flt is not None]
    if not filters:
        return
    blanked = [blank(flt, index) for index, flt in enumerate(filters)]
    if queryable(filters):
        sql, params = build_select(filters, NOW)
        check_statement(sql, params)
        blank_sql, blank_params = build_select(blanked, NOW)
        assert sql == blank_sql and len(params) == len(blank_params)
    else:
        assert not queryable(blanked)
    if any(flt.can_match for flt in filters):
        sql, params = build_count(filters, NOW)
        check_statement(sql, params)
        blank_sql, blank_params = build_count(blanked, NOW)
        assert sql == blank_sql and len(params) == len(blank_params)
