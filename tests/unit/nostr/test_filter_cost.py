"""Query and matching cost estimates: ordered the way the database and the index pay them."""

from __future__ import annotations

from cluster.nostr.filter_cost import count_cost, is_wide, req_cost, wide_filters
from cluster.nostr.filters import Filter, FilterLimits, parse_filter

LIMITS = FilterLimits(max_limit=5000, default_limit=500, max_values=1000)
KEY = "ab" * 32


def f(**fields: object) -> Filter:
    return parse_filter(fields, LIMITS)


def test_wide_means_no_id_author_or_tag() -> None:
    assert is_wide(f()) and is_wide(f(kinds=[1])) and is_wide(f(since=5, kinds=[1, 7]))
    assert not is_wide(f(ids=[KEY])) and not is_wide(f(authors=[KEY]))
    assert not is_wide(parse_filter({"#p": [KEY]}, LIMITS))
    assert (
        wide_filters([f(kinds=[1]), f(authors=[KEY]), f(), f(kinds=[])]) == 2
    )  # [] matches nothing


def test_req_costs_grow_with_limit_values_and_missing_indexes() -> None:
    by_id = req_cost([f(ids=[KEY], limit=5000)])
    one_author = req_cost([f(authors=[KEY], limit=100)])
    many_authors = req_cost([f(authors=[f"{i:064x}" for i in range(500)], limit=100)])
    kinds_only = req_cost([f(kinds=[1], limit=100)])
    everything = req_cost([f(limit=5000)])
    assert by_id == 1
    assert by_id < one_author < kinds_only < many_authors < everything
    assert one_author == 110 and kinds_only == 440 and many_authors == 5100
    assert req_cost([f(kinds=[1], limit=100)] * 3) == 3 * kinds_only  # filters add up
    assert req_cost([f(kinds=[], limit=100)]) == 1  # nothing to read still costs the minimum


def test_search_costs_more_than_the_same_filter_without_it() -> None:
    plain = req_cost([f(kinds=[1], limit=50)])
    searched = req_cost([f(kinds=[1], limit=50, search="nostr relay")])
    assert searched > plain


def test_count_ignores_the_limit_and_prices_every_match() -> None:
    tag = parse_filter({"#e": [KEY], "kinds": [7], "limit": 1}, LIMITS)
    assert count_cost([tag]) == count_cost([parse_filter({"#e": [KEY], "kinds": [7]}, LIMITS)])
    assert count_cost([tag]) > req_cost([tag])
    two_values = parse_filter({"#e": [KEY, "cd" * 32]}, LIMITS)
    assert count_cost([two_values]) == 2 * count_cost([tag])
    assert count_cost([f()]) < count_cost([tag])  # answered from the planner's estimate
