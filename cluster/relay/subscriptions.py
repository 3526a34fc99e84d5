"""The per-worker subscription index, inverted so one event costs work only for filters that
could match it: each filter is filed under its most selective field (ids, then authors, then a
tag, then a NIP-50 search word, then kinds); filters with none of these go to a short "broad"
list checked for every event. A search filter is filed under its longest word (the likeliest to
be rare): it can only match an event whose content has every query word as a word.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol

from cluster.nostr.event import Event
from cluster.nostr.filters import Filter
from cluster.nostr.search import SEARCHABLE_KINDS, content_words


class Subscriber(Protocol):
    """What the index needs from a connection: a way to hand it an event for a subscription."""

    def deliver(self, subscription: Subscription, event: Event, event_json: bytes) -> None: ...


class Subscription:
    """One REQ of one connection: its id and filters, and the ids it must not get live."""

    __slots__ = ("_suppressed", "_suppressed_until", "filters", "owner", "sub_id")

    def __init__(self, owner: Subscriber, sub_id: str, filters: tuple[Filter, ...]) -> None:
        self.owner = owner
        self.sub_id = sub_id
        self.filters = filters
        self._suppressed: set[str] = set()
        self._suppressed_until = 0.0

    def suppress(self, event_ids: set[str], until: float) -> None:
        """Already sent as stored events: drop them if they also arrive live before `until`."""
        self._suppressed = event_ids
        self._suppressed_until = until

    def already_sent(self, event_id: str, now: float) -> bool:
        if not self._suppressed:
            return False
        if now >= self._suppressed_until:
            self._suppressed = set()
            return False
        return event_id in self._suppressed


class _Entry:
    """One filter of one subscription, filed in one or more buckets."""

    __slots__ = ("buckets", "filter", "subscription")

    def __init__(self, subscription: Subscription, flt: Filter) -> None:
        self.subscription = subscription
        self.filter = flt
        self.buckets: list[tuple[dict[Hashable, set[_Entry]], Hashable]] = []


class SubscriptionIndex:
    def __init__(self) -> None:
        self._by_id: dict[Hashable, set[_Entry]] = {}
        self._by_author: dict[Hashable, set[_Entry]] = {}
        self._by_tag: dict[Hashable, set[_Entry]] = {}
        self._by_kind: dict[Hashable, set[_Entry]] = {}
        self._by_word: dict[Hashable, set[_Entry]] = {}
        self._broad: set[_Entry] = set()
        self._entries: dict[Subscription, list[_Entry]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def broad_count(self) -> int:
        return len(self._broad)

    def add(self, subscription: Subscription) -> None:
        entries = []
        for flt in subscription.filters:
            if not flt.can_match:
                continue
            entry = _Entry(subscription, flt)
            self._file(entry)
            entries.append(entry)
        self._entries[subscription] = entries

    def remove(self, subscription: Subscription) -> None:
        for entry in self._entries.pop(subscription, ()):
            if not entry.buckets:
                self._broad.discard(entry)
            for index, key in entry.buckets:
                bucket = index.get(key)
                if bucket is not None:
                    bucket.discard(entry)
                    if not bucket:
                        del index[key]

    def _file(self, entry: _Entry) -> None:
        flt = entry.filter
        keys: list[tuple[dict[Hashable, set[_Entry]], Hashable]]
        if flt.ids is not None:
            keys = [(self._by_id, value) for value in flt.ids]
        elif flt.authors is not None:
            keys = [(self._by_author, value) for value in flt.authors]
        elif flt.tags:
            letter, values = min(flt.tags, key=lambda item: len(item[1]))
            keys = [(self._by_tag, f"{letter}:{value}") for value in values]
        elif flt.search is not None:
            keys = [(self._by_word, max(flt.search.words, key=len))]
        elif flt.kinds is not None:
            keys = [(self._by_kind, value) for value in flt.kinds]
        else:
            self._broad.add(entry)
            return
        for index, key in keys:
            index.setdefault(key, set()).add(entry)
        entry.buckets = keys

    def candidates(self, event: Event) -> list[_Entry]:
        """Entries whose filter could match: the union of the buckets the event falls into."""
        found: list[_Entry] = list(self._broad)
        for index, key in (
            (self._by_id, event.id),
            (self._by_author, event.pubkey),
            (self._by_kind, event.kind),
        ):
            bucket = index.get(key)
            if bucket:
                found.extend(bucket)
        if self._by_tag:
            for tag in event.tags:
                if len(tag) >= 2 and len(tag[0]) == 1:
                    bucket = self._by_tag.get(f"{tag[0]}:{tag[1]}")
                    if bucket:
                        found.extend(bucket)
        if self._by_word and event.kind in SEARCHABLE_KINDS:
            for word in content_words(event.content):
                bucket = self._by_word.get(word)
                if bucket:
                    found.extend(bucket)
        return found

    def match(self, event: Event) -> list[Subscription]:
        """Every subscription with at least one filter matching the event, each once."""
        matched: list[Subscription] = []
        seen: set[Subscription] = set()
        for entry in self.candidates(event):
            subscription = entry.subscription
            if subscription not in seen and entry.filter.matches(event):
                seen.add(subscription)
                matched.append(subscription)
        return matched

    def dispatch(self, event: Event, event_json: bytes) -> int:
        """Hand the event to every matching subscription; returns how many."""
        matched = self.match(event)
        for subscription in matched:
            subscription.owner.deliver(subscription, event, event_json)
        return len(matched)
