"""NIP-01 filters: what parse_filter accepts and refuses, and the `matches` truth table."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.nostr.event import MAX_TIMESTAMP, Event
from cluster.nostr.filters import (
    Filter,
    FilterError,
    FilterLimits,
    UnsupportedFilter,
    parse_filter,
)
from cluster.nostr.rejection import Prefix

TAG_KEY = "tag filters are '#' and one letter a-z or A-Z"
LIMITS = FilterLimits(max_limit=100, default_limit=20, max_values=5)
ID = "ab" * 32
PK = "cd" * 32
OTHER = "ef" * 32

# ---- parse_filter: accepted ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({}, Filter(limit=20)),
        ({"ids": [ID]}, Filter(ids=frozenset({ID}), limit=20)),
        ({"ids": []}, Filter(ids=frozenset(), limit=20)),
        ({"authors": [PK, OTHER]}, Filter(authors=frozenset({PK, OTHER}), limit=20)),
        ({"kinds": [0, 1, 65535]}, Filter(kinds=frozenset({0, 1, 65535}), limit=20)),
        ({"kinds": [1, 1]}, Filter(kinds=frozenset({1}), limit=20)),
        ({"since": 0, "until": MAX_TIMESTAMP}, Filter(since=0, until=MAX_TIMESTAMP, limit=20)),
        ({"since": 10, "until": 5}, Filter(since=10, until=5, limit=20)),
        ({"limit": 0}, Filter(limit=0)),
        ({"limit": 7}, Filter(limit=7)),
        ({"limit": 100}, Filter(limit=100)),
        ({"limit": 101}, Filter(limit=100)),
        ({"limit": 10**12}, Filter(limit=100)),
        ({"#e": [ID]}, Filter(tags=(("e", frozenset({ID})),), limit=20)),
        ({"#t": ["any text", ""]}, Filter(tags=(("t", frozenset({"any text", ""})),), limit=20)),
        ({"#Z": ["x"]}, Filter(tags=(("Z", frozenset({"x"})),), limit=20)),
        ({"#t": []}, Filter(tags=(("t", frozenset()),), limit=20)),
        (
            {"#t": ["b"], "#e": ["a"], "#p": ["c"]},
            Filter(
                tags=(("e", frozenset({"a"})), ("p", frozenset({"c"})), ("t", frozenset({"b"}))),
                limit=20,
            ),
        ),
        ({"authors": [PK] * 5}, Filter(authors=frozenset({PK}), limit=20)),
    ],
    ids=repr,
)
def test_parse_accepts(raw: dict[str, Any], expected: Filter) -> None:
    assert parse_filter(raw, LIMITS) == expected


def test_default_limit_comes_from_the_limits() -> None:
    assert parse_filter({}, FilterLimits(default_limit=3)).limit == 3
    assert parse_filter({"limit": 9}, FilterLimits(max_limit=4)).limit == 4


# ---- parse_filter: refused -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ([], "a filter must be a JSON object"),
        ("{}", "a filter must be a JSON object"),
        (None, "a filter must be a JSON object"),
        ({"ids": ID}, "'ids' must be a list"),
        ({"ids": [ID.upper()]}, "'ids' must hold 64-character lowercase hex strings"),
        ({"ids": [ID[:-1]]}, "'ids' must hold 64-character lowercase hex strings"),
        ({"ids": [ID + "a"]}, "'ids' must hold 64-character lowercase hex strings"),
        ({"ids": ["g" * 64]}, "'ids' must hold 64-character lowercase hex strings"),
        ({"ids": ["ab" * 30 + " ab "]}, "'ids' must hold 64-character lowercase hex strings"),
        ({"ids": [1]}, "'ids' must hold 64-character lowercase hex strings"),
        ({"authors": ["AB" * 32]}, "'authors' must hold 64-character lowercase hex strings"),
        ({"authors": [PK[:10]]}, "'authors' must hold 64-character lowercase hex strings"),
        ({"authors": {"x": 1}}, "'authors' must be a list"),
        ({"kinds": [True]}, "'kinds' must hold integers between 0 and 65535"),
        ({"kinds": [False]}, "'kinds' must hold integers between 0 and 65535"),
        ({"kinds": [-1]}, "'kinds' must hold integers between 0 and 65535"),
        ({"kinds": [65536]}, "'kinds' must hold integers between 0 and 65535"),
        ({"kinds": ["1"]}, "'kinds' must hold integers between 0 and 65535"),
        ({"kinds": [1.0]}, "'kinds' must hold integers between 0 and 65535"),
        ({"kinds": 1}, "'kinds' must be a list"),
        ({"since": "1"}, "'since' must be a non-negative integer timestamp"),
        ({"since": 1.5}, "'since' must be a non-negative integer timestamp"),
        ({"since": True}, "'since' must be a non-negative integer timestamp"),
        ({"since": -1}, "'since' must be a non-negative integer timestamp"),
        ({"until": MAX_TIMESTAMP + 1}, "'until' must be a non-negative integer timestamp"),
        ({"until": None}, "'until' must be a non-negative integer timestamp"),
        ({"limit": -1}, "'limit' must be a non-negative integer"),
        ({"limit": True}, "'limit' must be a non-negative integer"),
        ({"limit": 1.0}, "'limit' must be a non-negative integer"),
        ({"limit": "5"}, "'limit' must be a non-negative integer"),
        ({"#ab": ["x"]}, "'#ab': " + TAG_KEY),
        ({"#": ["x"]}, "'#': " + TAG_KEY),
        ({"#1": ["x"]}, "'#1': " + TAG_KEY),
        ({"#é": ["x"]}, "'#é': " + TAG_KEY),
        ({"e": ["x"]}, "unsupported filter field 'e'"),
        ({"#e": "x"}, "'#e' must be a list"),
        ({"#e": [1]}, "'#e' must hold strings"),
        ({"#e": [None]}, "'#e' must hold strings"),
        ({"search": 5}, "'search' must be a string"),  # NIP-50 is supported: test_search.py
        ({"kinds": [1], "sort": "top"}, "unsupported filter field 'sort'"),
        ({"x" * 100: 1}, "unsupported filter field '" + "x" * 32 + "'"),
        ({"ids": [ID] * 6}, "'ids' has more than 5 values"),
        ({"authors": [PK] * 6}, "'authors' has more than 5 values"),
        ({"kinds": list(range(6))}, "'kinds' has more than 5 values"),
        ({"#p": ["v"] * 6}, "'#p' has more than 5 values"),
    ],
    ids=repr,
)
def test_parse_refuses(raw: Any, reason: str) -> None:
    with pytest.raises(FilterError) as excinfo:
        parse_filter(raw, LIMITS)
    assert str(excinfo.value) == reason
    # Unknown fields are "unsupported:" (NIP-01), everything else is "invalid:".
    unknown_field = reason.startswith("unsupported filter field")
    assert isinstance(excinfo.value, UnsupportedFilter) is unknown_field
    assert excinfo.value.prefix is (Prefix.UNSUPPORTED if unknown_field else Prefix.INVALID)


def test_filter_error_is_a_value_error() -> None:
    assert issubclass(FilterError, ValueError)


# ---- matches ---------------------------------------------------------------------------------


def make_event(
    *,
    id: str = ID,
    pubkey: str = PK,
    kind: int = 1,
    created_at: int = 100,
    tags: list[list[str]] | None = None,
) -> Event:
    return Event(
        id=id,
        pubkey=pubkey,
        created_at=created_at,
        kind=kind,
        tags=tags if tags is not None else [],
        content="",
        sig="00" * 64,
    )


EVENT = make_event(tags=[["e", OTHER, "wss://relay"], ["p", PK], ["t", "nostr"], ["t", "python"]])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({}, True),
        ({"ids": [ID]}, True),
        ({"ids": [OTHER, ID]}, True),
        ({"ids": [OTHER]}, False),
        ({"authors": [PK]}, True),
        ({"authors": [OTHER]}, False),
        ({"kinds": [1, 7]}, True),
        ({"kinds": [7]}, False),
        ({"since": 100}, True),
        ({"since": 101}, False),
        ({"until": 100}, True),
        ({"until": 99}, False),
        ({"since": 100, "until": 100}, True),
        ({"since": 99, "until": 101}, True),
        ({"#e": [OTHER]}, True),
        ({"#e": [PK]}, False),
        ({"#p": [PK]}, True),
        ({"#t": ["python"]}, True),
        ({"#t": ["rust", "nostr"]}, True),
        ({"#t": ["rust"]}, False),
        # The value is read at index 1 only: "wss://relay" is at index 2 of the e tag.
        ({"#e": ["wss://relay"]}, False),
        # The letter must match too: PK is an e-value nowhere, only a p-value.
        ({"#e": [PK], "#p": [PK]}, False),
        ({"#t": ["nostr"], "#p": [PK]}, True),
        ({"#t": ["nostr"], "#p": [OTHER]}, False),
        ({"#t": ["nostr"], "#p": [PK], "#e": [OTHER]}, True),
        ({"#d": [""]}, False),
        ({"#E": [OTHER]}, False),
        ({"ids": [ID], "authors": [PK], "kinds": [1], "since": 1, "until": 1000}, True),
        ({"ids": [ID], "authors": [PK], "kinds": [2]}, False),
        ({"ids": [ID], "authors": [OTHER], "kinds": [1]}, False),
        ({"authors": [PK], "until": 50}, False),
        # limit does not take part in matching (it only bounds stored-event queries)
        ({"limit": 0}, True),
    ],
    ids=repr,
)
def test_matches_truth_table(raw: dict[str, Any], expected: bool) -> None:
    assert parse_filter(raw, LIMITS).matches(EVENT) is expected


@pytest.mark.parametrize(
    "tags",
    [
        [["t"]],  # a tag with only a name has no value at index 1
        [["tt", "nostr"]],  # a multi-letter tag name is not the single-letter tag t
        [["T", "nostr"]],
        [["t", "Nostr"]],  # values compare exactly, case included
    ],
    ids=repr,
)
def test_tag_needs_that_letter_and_a_value_at_index_1(tags: list[list[str]]) -> None:
    assert not parse_filter({"#t": ["nostr"]}, LIMITS).matches(make_event(tags=tags))


def test_tag_matches_any_of_several_tags_with_the_letter() -> None:
    event = make_event(tags=[["t", "a"], ["t", "b"], ["t", "c"]])
    assert parse_filter({"#t": ["c"]}, LIMITS).matches(event)
    assert parse_filter({"#t": ["z", "b"]}, LIMITS).matches(event)


@pytest.mark.parametrize(
    ("raw", "can_match"),
    [
        ({}, True),
        ({"limit": 0}, True),
        ({"ids": []}, False),
        ({"authors": []}, False),
        ({"kinds": []}, False),
        ({"#t": []}, False),
        ({"#t": ["x"], "#e": []}, False),
        ({"since": 5, "until": 4}, False),
        ({"since": 5, "until": 5}, True),
        ({"ids": [ID], "kinds": []}, False),
    ],
    ids=repr,
)
def test_can_match(raw: dict[str, Any], can_match: bool) -> None:
    flt = parse_filter(raw, LIMITS)
    assert flt.can_match is can_match
    if not can_match:
        # can_match false means nothing can match: check it against events that fit every
        # non-empty constraint of the filter.
        for event in (EVENT, make_event(tags=[["t", "x"], ["e", "y"]], created_at=5)):
            assert not flt.matches(event)
