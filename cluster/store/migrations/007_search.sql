-- NIP-50 search (cluster/store/search.py): a partial GIN index on the text of the searchable
-- kinds (cluster/nostr/search.py SEARCHABLE_KINDS, the same list), as an expression, so the
-- INSERT that stores an event updates it and no column or second pass is added. Other kinds
-- (reactions, follow lists, DMs: most of the writes) do not touch it.
-- fastupdate = on: an insert appends its words to the index's pending list (one page) instead
-- of updating the GIN tree for each word (measured: a note's insert cost 3.5x that of an
-- unindexed one with fastupdate = off, 1.5x with the list). Every relay worker empties the list
-- in the background every second (cluster/store/search.py clean_pending_list), so the insert
-- that would overflow gin_pending_list_limit (1 MB) and pay for everyone's entries (the stall
-- 004_tag_index.sql removed for tags) does not come; searches read the list too: nothing is
-- missed meanwhile.
-- 'simple' (no stemming, no stop words) because notes are written in every language; an
-- operator who sets search.config to another configuration rebuilds this index for it with
-- `python -m cluster.store.search` (queries stay correct meanwhile, only slower).
-- The text of an event: its content. `raw::json ->> 'content'` alone fails for a content
-- holding U+0000 (PostgreSQL text cannot), and an index expression that fails makes the INSERT
-- fail: an event whose JSON holds the escape `\u0000` anywhere is stored with no searchable
-- text (NULL) instead. A SQL function (inlined, no PL/pgSQL call or exception block per
-- insert). Defined here, not in functions/, because the index depends on it: changing its body
-- needs a new migration that rebuilds the index.
CREATE FUNCTION relay_search_text(p_raw text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE WHEN strpos(p_raw, '\u0000') = 0 THEN p_raw::json ->> 'content' END;
CREATE INDEX events_search_idx ON events
    USING gin (to_tsvector('simple'::regconfig, relay_search_text(raw)))
    WITH (fastupdate = on, gin_pending_list_limit = 1024)
    WHERE kind IN (0, 1, 11, 20, 1111, 9802, 30023, 30818);
-- Statistics of the indexed expression: how many events each word occurs in. PostgreSQL keeps
-- none for a partial index's expression, so without these every word is assumed to match 0.5%
-- of the events: the planner then reads every match of a common word through the index
-- (1.3 s for a word in 75% of a million notes) where walking the time index would find the
-- newest ones at once (docs/SEARCH-AND-COUNT.md). ANALYZE computes the expression on its
-- sample rows (about 1 s per ANALYZE of the events table).
CREATE STATISTICS events_search_stats
    ON (to_tsvector('simple'::regconfig, relay_search_text(raw))) FROM events;
