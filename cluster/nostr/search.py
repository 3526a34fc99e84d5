"""NIP-50 `search` strings: the words to look for, extensions set aside, and the live match (pure).

Stored events are searched by PostgreSQL full-text search (cluster/store/search.py); this module
decides what the query *is*. NIP-50 lets a query carry `key:value` extensions (`language:en`,
`include:spam`, ...) and tells relays to ignore those they do not support: this relay supports
none, so they are dropped from the text handed to `plainto_tsquery`, and a search left with no
words is no search constraint at all (the filter's other fields still apply).

Live events (a subscription after EOSE) cannot go through PostgreSQL, so `SearchQuery.matches`
approximates the stored match: every query word must be one of the content's words, compared
case-insensitively, where a word is a run of letters, digits or underscores (what PostgreSQL's
default parser yields for ordinary text under the `simple` configuration). With a stemming
configuration (`english`, ...) stored results also match inflected forms ("running" finds
"runs"); live matching does not stem, so it can miss such events, never deliver a non-match.
"""

from __future__ import annotations

import re

import msgspec

SEARCHABLE_KINDS = (0, 1, 11, 20, 1111, 9802, 30023, 30818)
"""Kinds whose content is text people search: profiles (0), notes (1), threads (11), pictures
(20), comments (1111), highlights (9802), long-form articles (30023) and wiki pages (30818).
Reactions, follow lists and encrypted DMs are not text; leaving them out keeps the search index
small and off their write path. migrations/007_search.sql indexes exactly these kinds."""

MAX_SEARCH_LENGTH = 256
"""Longest `search` string accepted: a query, not a document."""
MAX_SEARCH_WORDS = 16
"""Most words one search may hold; more are refused (each is a GIN index lookup)."""

_EXTENSION = re.compile(r"[A-Za-z][A-Za-z0-9_-]*:[^\s/:][^\s]*")
_WORD = re.compile(r"\w+")


class SearchQuery(msgspec.Struct, frozen=True, gc=False):
    """A parsed `search`: `text` goes to `plainto_tsquery`, `words` drive the live match."""

    text: str
    words: tuple[str, ...]
    extensions: tuple[tuple[str, str], ...] = ()

    def matches(self, content: str) -> bool:
        """True when every word of the query is a word of `content` (case-insensitive)."""
        lowered = content.lower()
        # Cheap substring test first: most events of a broad subscription fail it.
        if not all(word in lowered for word in self.words):
            return False
        found = set(_WORD.findall(lowered))
        return all(word in found for word in self.words)


def content_words(content: str) -> set[str]:
    """The words `SearchQuery.matches` compares against (the subscription index files by them)."""
    return set(_WORD.findall(content.lower()))


class SearchError(ValueError):
    """A search string the relay will not run; shown to the client after `invalid: `."""


def parse_search(value: object) -> SearchQuery | None:
    """The query in a filter's `search` field, or None when it asks for nothing once its
    extensions are ignored (`""`, `"language:en"`: the other fields decide alone)."""
    if not isinstance(value, str):
        raise SearchError("'search' must be a string")
    if len(value) > MAX_SEARCH_LENGTH:
        raise SearchError(f"'search' is longer than {MAX_SEARCH_LENGTH} characters")
    if "\x00" in value:
        raise SearchError("'search' must not contain NUL")
    kept: list[str] = []
    extensions: list[tuple[str, str]] = []
    for token in value.split():
        if _EXTENSION.fullmatch(token):
            key, _, extension_value = token.partition(":")
            extensions.append((key.lower(), extension_value))
        else:
            kept.append(token)
    text = " ".join(kept)
    words = tuple(dict.fromkeys(_WORD.findall(text.lower())))
    if not words:
        return None
    if len(words) > MAX_SEARCH_WORDS:
        raise SearchError(f"'search' has more than {MAX_SEARCH_WORDS} words")
    return SearchQuery(text=text, words=words, extensions=tuple(extensions))
