"""The inverted SubscriptionIndex against a naive scan of every filter (seeded random)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from cluster.nostr.event import Event
from cluster.nostr.filters import Filter, FilterLimits, parse_filter
from cluster.relay.subscriptions import Subscription, SubscriptionIndex

LIMITS = FilterLimits(max_limit=100, default_limit=10, max_values=50)
IDS = [f"{i:02x}" * 32 for i in range(12)]
AUTHORS = [f"a{i:x}" * 32 for i in range(8)]
KINDS = [0, 1, 3, 7, 30023, 10002]
LETTERS = ["e", "p", "t", "d"]
VALUES = ["v0", "v1", "v2", "v3", *IDS[:3], *AUTHORS[:3]]
TIMES = range(100, 110)


class Recorder:
    def __init__(self) -> None:
        self.delivered: list[tuple[Subscription, Event, bytes]] = []

    def deliver(self, subscription: Subscription, event: Event, event_json: bytes) -> None:
        self.delivered.append((subscription, event, event_json))


def some(rng: random.Random, pool: list[Any], empty_ok: bool = True) -> list[Any]:
    low = 0 if empty_ok and rng.random() < 0.05 else 1
    return rng.sample(pool, rng.randint(low, min(4, len(pool))))


def random_filter(rng: random.Random) -> Filter:
    raw: dict[str, Any] = {}
    if rng.random() < 0.15:
        raw["ids"] = some(rng, IDS)
    if rng.random() < 0.4:
        raw["authors"] = some(rng, AUTHORS)
    if rng.random() < 0.4:
        raw["kinds"] = some(rng, KINDS)
    for letter in LETTERS:
        if rng.random() < 0.2:
            raw[f"#{letter}"] = some(rng, VALUES)
    if rng.random() < 0.3:
        raw["since"] = rng.choice(TIMES)
    if rng.random() < 0.3:
        raw["until"] = rng.choice(TIMES)
    if rng.random() < 0.1:
        raw["limit"] = 0
    return parse_filter(raw, LIMITS)


def random_event(rng: random.Random) -> Event:
    tags: list[list[str]] = []
    for _ in range(rng.randint(0, 5)):
        shape = rng.random()
        if shape < 0.1:
            tags.append([rng.choice(LETTERS)])  # no value at index 1
        elif shape < 0.2:
            tags.append([rng.choice(["ee", "E", "pp", "x"]), rng.choice(VALUES)])
        else:
            tag = [rng.choice(LETTERS), rng.choice(VALUES)]
            if rng.random() < 0.2:
                tag.append(rng.choice(VALUES))  # index 2 must not count
            tags.append(tag)
    return Event(
        id=rng.choice(IDS),
        pubkey=rng.choice(AUTHORS),
        created_at=rng.choice(TIMES),
        kind=rng.choice(KINDS),
        tags=tags,
        content="",
        sig="00" * 64,
    )


def random_subscriptions(rng: random.Random, owner: Recorder, count: int) -> list[Subscription]:
    return [
        Subscription(
            owner, f"s{i}", tuple(random_filter(rng) for _ in range(rng.choice([1, 1, 2, 3])))
        )
        for i in range(count)
    ]


def naive(subs: list[Subscription], event: Event) -> list[Subscription]:
    return [s for s in subs if any(f.matches(event) for f in s.filters)]


def buckets(index: SubscriptionIndex) -> list[dict[Any, set[Any]]]:
    return [index._by_id, index._by_author, index._by_tag, index._by_kind]


def assert_no_empty_buckets(index: SubscriptionIndex) -> None:
    for bucket_map in buckets(index):
        for key, bucket in bucket_map.items():
            assert bucket, f"empty bucket left for {key!r}"


def assert_index_agrees(
    index: SubscriptionIndex, subs: list[Subscription], events: list[Event]
) -> int:
    matched_total = 0
    for event in events:
        got = index.match(event)
        assert len(got) == len({id(s) for s in got}), "a subscription was matched twice"
        expected = naive(subs, event)
        assert {id(s) for s in got} == {id(s) for s in expected}, event
        matched_total += len(got)
    return matched_total


@pytest.mark.parametrize("seed", range(6))
def test_match_equals_naive_scan(seed: int) -> None:
    rng = random.Random(seed)
    owner = Recorder()
    subs = random_subscriptions(rng, owner, 300)
    index = SubscriptionIndex()
    for sub in subs:
        index.add(sub)
    assert len(index) == len(subs)
    events = [random_event(rng) for _ in range(300)]
    # The comparison must not be vacuous: plenty of matches, and plenty of misses.
    matched = assert_index_agrees(index, subs, events)
    assert matched > 300
    assert matched < 300 * len(subs) / 2


@pytest.mark.parametrize("seed", range(3))
def test_remove_leaves_no_empty_buckets_and_no_leftover_matches(seed: int) -> None:
    rng = random.Random(1000 + seed)
    owner = Recorder()
    subs = random_subscriptions(rng, owner, 200)
    index = SubscriptionIndex()
    for sub in subs:
        index.add(sub)
    events = [random_event(rng) for _ in range(150)]

    removed = rng.sample(subs, len(subs) // 2)
    removed_ids = {id(s) for s in removed}
    for sub in removed:
        index.remove(sub)
    kept = [s for s in subs if id(s) not in removed_ids]
    assert len(index) == len(kept)
    assert_no_empty_buckets(index)
    assert_index_agrees(index, kept, events)
    for event in events:
        assert not removed_ids & {id(s) for s in index.match(event)}

    index.remove(removed[0])  # removing twice is harmless
    for sub in kept:
        index.remove(sub)
    assert len(index) == 0
    assert index.broad_count == 0
    assert all(not bucket_map for bucket_map in buckets(index))
    assert all(index.match(event) == [] for event in events)
    assert all(index.candidates(event) == [] for event in events)


def test_each_subscription_matched_once_even_if_several_filters_and_tags_hit() -> None:
    owner = Recorder()
    event = Event(
        id=IDS[0],
        pubkey=AUTHORS[0],
        created_at=100,
        kind=1,
        tags=[["t", "v0"], ["t", "v1"], ["p", "v0"]],
        content="",
        sig="00" * 64,
    )
    filters = tuple(
        parse_filter(raw, LIMITS)
        for raw in (
            {"ids": [IDS[0]]},
            {"authors": [AUTHORS[0]]},
            {"#t": ["v0", "v1"]},
            {"kinds": [1]},
            {},
        )
    )
    sub = Subscription(owner, "all", filters)
    index = SubscriptionIndex()
    index.add(sub)
    assert len(index.candidates(event)) >= 5
    assert index.match(event) == [sub]
    assert index.dispatch(event, b"{}") == 1
    assert owner.delivered == [(sub, event, b"{}")]


@pytest.mark.parametrize(
    ("raw", "bucket"),
    [
        ({}, "broad"),
        ({"since": 5}, "broad"),
        ({"until": 5, "limit": 0}, "broad"),
        ({"ids": [IDS[0]], "authors": [AUTHORS[0]], "kinds": [1]}, "_by_id"),
        ({"authors": [AUTHORS[0]], "kinds": [1], "#t": ["v0"]}, "_by_author"),
        ({"#t": ["v0", "v1"], "#p": ["v2"], "kinds": [1]}, "_by_tag"),
        ({"kinds": [1, 7], "since": 5}, "_by_kind"),
        ({"kinds": []}, None),
        ({"since": 9, "until": 8}, None),
    ],
    ids=repr,
)
def test_filters_are_filed_under_their_most_selective_field(
    raw: dict[str, Any], bucket: str | None
) -> None:
    index = SubscriptionIndex()
    index.add(Subscription(Recorder(), "s", (parse_filter(raw, LIMITS),)))
    filed = {name: len(getattr(index, name)) for name in ("_by_id", "_by_author", "_by_tag")}
    filed["_by_kind"] = len(index._by_kind)
    assert index.broad_count == (1 if bucket == "broad" else 0)
    for name, size in filed.items():
        assert (size > 0) == (name == bucket), (name, filed)
    if bucket == "_by_tag":
        # the tag with the fewest values is the one filed
        assert set(index._by_tag) == {"p:v2"}


def test_only_broad_filters_are_examined_for_unrelated_events() -> None:
    rng = random.Random(7)
    owner = Recorder()
    index = SubscriptionIndex()
    broad = Subscription(owner, "broad", (parse_filter({"since": 0}, LIMITS),))
    index.add(broad)
    for i in range(200):
        index.add(Subscription(owner, f"a{i}", (parse_filter({"authors": AUTHORS[1:]}, LIMITS),)))
    event = random_event(rng)
    lonely = Event(
        id="ee" * 32,
        pubkey="99" * 32,
        created_at=1,
        kind=4242,
        tags=[],
        content="",
        sig=event.sig,
    )
    assert [entry.subscription for entry in index.candidates(lonely)] == [broad]
    assert index.match(lonely) == [broad]


def test_ids_sent_as_stored_events_are_suppressed_live_until_the_grace_ends() -> None:
    from cluster.relay.subscriptions import Subscription

    class Owner:
        def deliver(self, subscription: Subscription, event: object, event_json: bytes) -> None:
            raise AssertionError("not used")

    subscription = Subscription(Owner(), "s", ())
    assert not subscription.already_sent("a", now=0.0)
    subscription.suppress({"a", "b"}, until=10.0)
    assert subscription.already_sent("a", now=5.0)
    assert not subscription.already_sent("c", now=5.0)
    assert not subscription.already_sent("a", now=10.0)  # grace over: memory released
    assert not subscription.already_sent("b", now=6.0)
