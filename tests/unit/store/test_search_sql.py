"""The SQL of a NIP-50 filter: stored documents, the narrow filters' unindexed match, and the
configuration written as a checked literal."""

from __future__ import annotations

import time

import pytest

from cluster.nostr.filters import FilterLimits, parse_filter
from cluster.store.sql import build_count, build_select

AUTHOR = "a" * 64


def sql_of(flt: dict[str, object], config: str = "simple") -> tuple[str, list[object]]:
    return build_select([parse_filter(flt, FilterLimits())], int(time.time()), config)


def test_a_broad_search_matches_the_stored_document_with_the_indexable_operator() -> None:
    sql, params = sql_of({"search": "nostr apps", "kinds": [1], "limit": 5})
    assert "search_doc @@ plainto_tsquery('simple'::regconfig, %s)" in sql
    assert "ts_rank(search_doc, plainto_tsquery('simple'::regconfig, %s))" in sql
    assert "to_tsvector" not in sql  # nothing recomputed from raw
    assert params.count("nostr apps") == 2 and params[-1] == 5  # limit after ranking
    assert 100 in params  # the candidates: at least SEARCH_CANDIDATES


def test_an_authors_search_matches_with_the_function_no_index_serves() -> None:
    sql, _ = sql_of({"search": "nostr", "authors": [AUTHOR]})
    assert "ts_match_vq(search_doc, plainto_tsquery('simple'::regconfig, %s))" in sql
    assert "search_doc @@" not in sql
    count_sql, _ = build_count(
        [parse_filter({"search": "nostr", "ids": [AUTHOR]}, FilterLimits())], int(time.time())
    )
    assert "ts_match_vq(search_doc" in count_sql


def test_a_configuration_name_is_checked_before_it_reaches_sql() -> None:
    assert "'english'::regconfig" in sql_of({"search": "runs"}, "english")[0]
    with pytest.raises(ValueError, match="not a text search configuration name"):
        sql_of({"search": "runs"}, "english'); DROP TABLE events; --")
