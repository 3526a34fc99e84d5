-- NIP-50: the text of an event as the search index reads it (cluster/store/search.py).
-- `raw::json ->> 'content'` alone fails for a content holding U+0000 (PostgreSQL text cannot),
-- and an index expression that fails makes the INSERT fail: an event whose JSON holds the
-- escape `\u0000` anywhere has no searchable text (NULL) instead. A SQL function (inlined: no
-- PL/pgSQL call or exception block per insert). The index depends on it: a change to its body
-- must come with a rebuild of the index (`python -m cluster.store.search`).
CREATE OR REPLACE FUNCTION relay_search_text(p_raw text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE WHEN strpos(p_raw, '\u0000') = 0 THEN p_raw::json ->> 'content' END;
