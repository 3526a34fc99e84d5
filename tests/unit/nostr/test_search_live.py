"""Live NIP-50 matching through the subscription index (cluster/relay/subscriptions.py): search
filters are filed under a word, and the index finds exactly what a scan of every filter finds."""

from __future__ import annotations

import random

from cluster.nostr.event import Event
from cluster.nostr.filters import FilterLimits, parse_filter
from cluster.nostr.signing import Signer
from cluster.relay.subscriptions import Subscription, SubscriptionIndex

LIMITS = FilterLimits()
WORDS = ["orange", "purple", "sky", "nostr", "relay", "zap", "art", "party", "Sunrise", "gm"]


class Sink:
    def deliver(self, subscription: Subscription, event: Event, event_json: bytes) -> None:
        pass


def test_search_filters_leave_the_broad_list() -> None:
    index = SubscriptionIndex()
    index.add(Subscription(Sink(), "s", (parse_filter({"search": "purple sky"}, LIMITS),)))
    index.add(Subscription(Sink(), "k", (parse_filter({"kinds": [1], "search": "zap"}, LIMITS),)))
    assert index.broad_count == 0
    signer = Signer()
    assert [s.sub_id for s in index.match(signer.sign(1, "a Purple SKY"))] == ["s"]
    assert index.match(signer.sign(1, "purple only")) == []
    assert [s.sub_id for s in index.match(signer.sign(1, "zap!"))] == ["k"]
    assert index.match(signer.sign(7, "zap")) == []  # a reaction is not searchable


def test_index_matches_what_a_scan_matches() -> None:
    rng = random.Random(50)
    signer = Signer()
    index = SubscriptionIndex()
    subscriptions = []
    for i in range(200):
        raw: dict[str, object] = {"search": " ".join(rng.sample(WORDS, rng.randint(1, 3)))}
        if rng.random() < 0.3:
            raw["kinds"] = [rng.choice([1, 7, 30023])]
        if rng.random() < 0.1:
            raw["search"] = "language:en"  # no words: an ordinary (broad or kinds) filter
        subscription = Subscription(Sink(), f"s{i}", (parse_filter(raw, LIMITS),))
        index.add(subscription)
        subscriptions.append(subscription)
    for _ in range(300):
        content = " ".join(rng.choice([*WORDS, "x", "y"]) for _ in range(rng.randint(0, 8)))
        event = signer.sign(rng.choice([1, 1, 7, 30023]), content)
        expected = {s.sub_id for s in subscriptions if any(f.matches(event) for f in s.filters)}
        assert {s.sub_id for s in index.match(event)} == expected
