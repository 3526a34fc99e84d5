-- NIP-50: the text of an event that its stored search document is made of (026_search_document.sql,
-- cluster/store/search.py). `raw::json ->> 'content'` alone fails for a content holding U+0000
-- (PostgreSQL text cannot), and a failing trigger makes the INSERT fail: an event whose JSON
-- holds the escape `\u0000` anywhere has no searchable text (NULL) instead. A SQL function
-- (inlined: no PL/pgSQL call or exception block). A change to its body must come with a
-- recomputation of the stored documents (`python -m cluster.store.search --recompute`).
CREATE OR REPLACE FUNCTION relay_search_text(p_raw text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE WHEN strpos(p_raw, '\u0000') = 0 THEN p_raw::json ->> 'content' END;
