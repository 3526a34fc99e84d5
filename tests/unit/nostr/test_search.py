"""NIP-50 search strings: words, ignored extensions, empty searches, live matching."""

from __future__ import annotations

import pytest

from cluster.nostr.filters import FilterError, FilterLimits, parse_filter
from cluster.nostr.search import SearchQuery, parse_search
from cluster.nostr.signing import Signer

LIMITS = FilterLimits()


def test_words_are_lowercased_and_deduplicated() -> None:
    query = parse_search("Best  NOSTR apps nostr")
    assert query is not None
    assert query.words == ("best", "nostr", "apps")
    assert query.text == "Best NOSTR apps nostr"


def test_extensions_are_set_aside_and_ignored() -> None:
    query = parse_search("orange language:en include:spam nsfw:false domain:example.com")
    assert query == SearchQuery(
        text="orange",
        words=("orange",),
        extensions=(
            ("language", "en"),
            ("include", "spam"),
            ("nsfw", "false"),
            ("domain", "example.com"),
        ),
    )


def test_a_url_is_not_an_extension() -> None:
    query = parse_search("https://example.com/page")
    assert query is not None and query.text == "https://example.com/page"


@pytest.mark.parametrize(
    "text", ["", "   ", "language:en", "include:spam sentiment:positive", "!?"]
)
def test_a_search_without_words_is_no_constraint(text: str) -> None:
    assert parse_search(text) is None
    assert parse_filter({"kinds": [1], "search": text}, LIMITS).search is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (5, "'search' must be a string"),
        (["a"], "'search' must be a string"),
        ("x" * 300, "longer than 256"),
        ("a\x00b", "NUL"),
        (" ".join(f"w{i}" for i in range(17)), "more than 16 words"),
    ],
)
def test_bad_searches_are_refused_as_invalid(value: object, message: str) -> None:
    with pytest.raises(FilterError, match=message) as raised:
        parse_filter({"search": value}, LIMITS)
    assert raised.value.prefix.value == "invalid"


def test_search_combines_with_the_other_fields() -> None:
    signer = Signer()
    flt = parse_filter({"kinds": [1], "authors": [signer.pubkey], "search": "Purple"}, LIMITS)
    assert flt.search is not None and flt.kinds == frozenset({1})
    assert flt.matches(signer.sign(1, "a purple sky"))
    assert not flt.matches(signer.sign(1, "an orange sky"))
    assert not flt.matches(signer.sign(7, "purple"))  # kind filter
    assert not flt.matches(Signer().sign(1, "purple"))  # authors


def test_live_match_needs_every_word_as_a_whole_word() -> None:
    query = parse_search("art nostr")
    assert query is not None
    assert query.matches("Nostr ART!")
    assert query.matches("on nostr, art is everywhere")
    assert not query.matches("party on nostr")  # "art" only inside a word
    assert not query.matches("art only")


def test_kinds_that_are_not_text_never_match_a_search() -> None:
    flt = parse_filter({"search": "plus"}, LIMITS)
    assert not flt.matches(Signer().sign(7, "plus"))  # a reaction
    assert flt.matches(Signer().sign(30023, "plus"))
