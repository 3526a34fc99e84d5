"""NIP-01 subscription filters: parsing with limits, and `matches` for live delivery (pure)."""

from __future__ import annotations

from typing import Any

import msgspec

from cluster.nostr.event import MAX_KIND, MAX_TIMESTAMP, Event, is_lower_hex
from cluster.nostr.rejection import Prefix
from cluster.nostr.search import SEARCHABLE_KINDS, SearchError, SearchQuery, parse_search


class FilterError(ValueError):
    """A filter the relay will not run; the message is shown to the client after `invalid: `."""

    prefix = Prefix.INVALID


class UnsupportedFilter(FilterError):
    """A filter field this relay does not implement (NIP-01's `unsupported:` prefix)."""

    prefix = Prefix.UNSUPPORTED


class FilterLimits(msgspec.Struct, frozen=True):
    """The bounds a filter must respect; built from the relay's configuration."""

    max_limit: int = 5000
    default_limit: int = 500
    max_values: int = 1000
    search: bool = True
    """NIP-50 `search` accepted; False when the relay runs without its search index."""


class Filter(msgspec.Struct, frozen=True, gc=False):
    """One NIP-01 filter. `None` means "no constraint"; an empty set means "matches nothing".

    `limit` is the effective limit for the stored-events query: absent means the relay's default,
    and anything above the relay's maximum is lowered to it (NIP-01 lets relays cap it).
    """

    ids: frozenset[str] | None = None
    authors: frozenset[str] | None = None
    kinds: frozenset[int] | None = None
    tags: tuple[tuple[str, frozenset[str]], ...] = ()
    since: int | None = None
    until: int | None = None
    limit: int = 500
    search: SearchQuery | None = None  # NIP-50; stored results then come by relevance

    @property
    def can_match(self) -> bool:
        """False when a list is empty or the time window is empty: no query needed."""
        if self.ids is not None and not self.ids:
            return False
        if self.authors is not None and not self.authors:
            return False
        if self.kinds is not None and not self.kinds:
            return False
        if any(not values for _, values in self.tags):
            return False
        return not (self.since is not None and self.until is not None and self.since > self.until)

    def matches(self, event: Event) -> bool:
        if self.ids is not None and event.id not in self.ids:
            return False
        if self.authors is not None and event.pubkey not in self.authors:
            return False
        if self.kinds is not None and event.kind not in self.kinds:
            return False
        if self.since is not None and event.created_at < self.since:
            return False
        if self.until is not None and event.created_at > self.until:
            return False
        for letter, values in self.tags:
            if not any(
                len(tag) >= 2 and tag[0] == letter and tag[1] in values for tag in event.tags
            ):
                return False
        if self.search is not None:
            return event.kind in SEARCHABLE_KINDS and self.search.matches(event.content)
        return True


def _hex_set(name: str, value: Any, limits: FilterLimits) -> frozenset[str]:
    items = _bounded_list(name, value, limits)
    for item in items:
        if not isinstance(item, str) or not is_lower_hex(item, 64):
            raise FilterError(f"'{name}' must hold 64-character lowercase hex strings")
    return frozenset(items)


def _bounded_list(name: str, value: Any, limits: FilterLimits) -> list[Any]:
    if not isinstance(value, list):
        raise FilterError(f"'{name}' must be a list")
    if len(value) > limits.max_values:
        raise FilterError(f"'{name}' has more than {limits.max_values} values")
    return value


def _timestamp(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_TIMESTAMP:
        raise FilterError(f"'{name}' must be a non-negative integer timestamp")
    return value


def parse_filter(obj: Any, limits: FilterLimits) -> Filter:
    """Build a Filter from decoded JSON, refusing anything NIP-01 does not define.

    Unknown fields are refused rather than ignored: silently ignoring one would answer a
    narrower question with a broader result. `search` is NIP-50 (cluster/nostr/search.py).
    """
    if not isinstance(obj, dict):
        raise FilterError("a filter must be a JSON object")
    ids = authors = None
    kinds: frozenset[int] | None = None
    tags: list[tuple[str, frozenset[str]]] = []
    since = until = None
    limit = limits.default_limit
    search = None
    for key, value in obj.items():
        if key == "ids":
            ids = _hex_set(key, value, limits)
        elif key == "authors":
            authors = _hex_set(key, value, limits)
        elif key == "kinds":
            items = _bounded_list(key, value, limits)
            for kind in items:
                if not isinstance(kind, int) or isinstance(kind, bool) or not 0 <= kind <= MAX_KIND:
                    raise FilterError(f"'kinds' must hold integers between 0 and {MAX_KIND}")
            kinds = frozenset(items)
        elif key == "since":
            since = _timestamp(key, value)
        elif key == "until":
            until = _timestamp(key, value)
        elif key == "limit":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise FilterError("'limit' must be a non-negative integer")
            limit = min(value, limits.max_limit)
        elif len(key) == 2 and key[0] == "#" and key[1].isascii() and key[1].isalpha():
            items = _bounded_list(key, value, limits)
            if not all(isinstance(item, str) for item in items):
                raise FilterError(f"'{key}' must hold strings")
            tags.append((key[1], frozenset(items)))
        elif key.startswith("#"):
            raise FilterError(f"'{key[:32]}': tag filters are '#' and one letter a-z or A-Z")
        elif key == "search":
            if not limits.search:
                raise UnsupportedFilter("search (NIP-50) is not enabled on this relay")
            try:
                search = parse_search(value)
            except SearchError as exc:
                raise FilterError(str(exc)) from None
        else:
            raise UnsupportedFilter(f"unsupported filter field '{key[:32]}'")
    return Filter(
        ids=ids,
        authors=authors,
        kinds=kinds,
        tags=tuple(sorted(tags)),
        since=since,
        until=until,
        limit=limit,
        search=search,
    )
