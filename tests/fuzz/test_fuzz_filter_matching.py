"""Filter.matches against a deliberately naive reference written from NIP-01's prose.

The reference reads the raw JSON filter (not the parsed Filter), so parse_filter's translation
is checked too. Events and filters draw from small pools of ids, keys, kinds, times and tag
values so that matches and near-misses are both common.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.nostr.event import Event
from cluster.nostr.filters import FilterLimits, parse_filter

LIMITS = FilterLimits(max_limit=1000, default_limit=100, max_values=20)
FUZZ = settings(max_examples=200, deadline=None, database=None)

IDS = [f"{n:064x}" for n in range(4)]
KEYS = [f"{n:02x}" * 32 for n in (10, 11, 12)]
KINDS = [0, 1, 4, 7, 30023]
TIMES = [0, 1, 50, 100, 2**53 - 1]
LETTERS = ["e", "p", "t", "E", "d"]
VALUES = ["", "a", "A", "x y", IDS[0], KEYS[0], "\x00", "é"]


def naive_matches(raw_filter: dict[str, Any], event: dict[str, Any]) -> bool:
    """NIP-01, read literally: every condition present must hold; lists mean "any of"."""
    for key, wanted in raw_filter.items():
        if key == "ids":
            ok = event["id"] in wanted
        elif key == "authors":
            ok = event["pubkey"] in wanted
        elif key == "kinds":
            ok = event["kind"] in wanted
        elif key == "since":
            ok = event["created_at"] >= wanted
        elif key == "until":
            ok = event["created_at"] <= wanted
        elif key == "limit":
            ok = True  # limits the stored-events answer, not what matches
        elif key.startswith("#"):
            letter = key[1:]
            ok = False
            for tag in event["tags"]:
                if len(tag) >= 2 and tag[0] == letter and tag[1] in wanted:
                    ok = True
        else:
            raise AssertionError(f"reference does not know {key}")
        if not ok:
            return False
    return True


tag_names = st.one_of(st.sampled_from(LETTERS), st.sampled_from(["", "ee", "-", "expiration"]))
events = st.fixed_dictionaries(
    {
        "id": st.sampled_from(IDS),
        "pubkey": st.sampled_from(KEYS),
        "created_at": st.sampled_from(TIMES),
        "kind": st.sampled_from(KINDS),
        "tags": st.lists(
            st.one_of(
                st.tuples(tag_names, st.sampled_from(VALUES)).map(list),
                st.tuples(tag_names, st.sampled_from(VALUES), st.text(max_size=3)).map(list),
                st.lists(st.sampled_from(LETTERS + VALUES), max_size=1),
            ),
            max_size=5,
        ),
        "content": st.text(max_size=5),
        "sig": st.just("00" * 64),
    }
)
filters = st.fixed_dictionaries(
    {},
    optional={
        "ids": st.lists(st.sampled_from(IDS), max_size=3),
        "authors": st.lists(st.sampled_from(KEYS), max_size=3),
        "kinds": st.lists(st.sampled_from(KINDS), max_size=3),
        "since": st.sampled_from(TIMES),
        "until": st.sampled_from(TIMES),
        "limit": st.sampled_from([0, 1, 5000]),
        "#e": st.lists(st.sampled_from(VALUES), max_size=3),
        "#p": st.lists(st.sampled_from(VALUES), max_size=3),
        "#E": st.lists(st.sampled_from(VALUES), max_size=3),
        "#t": st.lists(st.sampled_from(VALUES), max_size=3),
    },
)


@FUZZ
@given(filters, st.lists(events, min_size=1, max_size=6))
def test_matches_equals_the_naive_reference(raw_filter: dict[str, Any], raws: list[Any]) -> None:
    flt = parse_filter(raw_filter, LIMITS)
    for raw in raws:
        event = Event(**raw)
        assert flt.matches(event) is naive_matches(raw_filter, raw), (raw_filter, raw)
        if not flt.can_match:
            assert not flt.matches(event)  # can_match False promises no event matches


@FUZZ
@given(events, st.sampled_from(["ids", "authors", "kinds", "since", "until", "#e", "#t"]))
def test_a_filter_built_from_the_event_matches_it(raw: dict[str, Any], field: str) -> None:
    event = Event(**raw)
    by_field: dict[str, dict[str, Any]] = {
        "ids": {"ids": [event.id]},
        "authors": {"authors": [event.pubkey]},
        "kinds": {"kinds": [event.kind]},
        "since": {"since": event.created_at, "until": event.created_at},
        "until": {"until": event.created_at},
        "#e": {"#e": event.tag_values("e")},
        "#t": {"#t": event.tag_values("t")},
    }
    flt = parse_filter(by_field[field], LIMITS)
    expected = not field.startswith("#") or bool(event.tag_values(field[1]))
    assert flt.matches(event) is expected
