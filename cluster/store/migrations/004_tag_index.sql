-- Query speed on large tables (docs/ARCHITECTURE.md, "Query plans").
--
-- 1. Tag filters (#e, #p, #t, ...) read a B-tree of (tag value, created_at DESC, id) instead of
--    the GIN index on events.tagvalues. GIN cannot return rows in time order, so a popular tag
--    with `limit 20` had to fetch and sort every match (or walk the global time index); the
--    B-tree yields the newest matches first and stops after `limit`. It also replaces GIN's
--    pending-list flushes, which stalled an unlucky insert for hundreds of milliseconds.
--    Rows are kept by statement-level triggers, so every way an event is stored or removed
--    (save, replace, NIP-09 deletion, NIP-40 purge, bulk COPY) keeps the tag rows in step.
--    events.tagvalues stays the source of truth and is still used to recheck matches.
-- 2. The per-author index carries id, kind and expires_at, so a follow feed (a LATERAL scan
--    per author) picks its newest ids from the index alone and reads only `limit` rows.

CREATE TABLE event_tags (
    tagvalue          text    NOT NULL,       -- 'letter:value', as in events.tagvalues
    event_created_at  bigint  NOT NULL,       -- named apart from events' columns: tag queries
    event_id          bytea   NOT NULL,       -- join events, and unqualified names stay unambiguous
    event_kind        integer NOT NULL
);
-- The scan order of every tag query: newest first, ties to the lowest id (NIP-01).
CREATE INDEX event_tags_recent_idx ON event_tags (tagvalue, event_created_at DESC, event_id)
    INCLUDE (event_kind);

-- The triggers below must name existing functions, so this migration defines the versions it
-- needs; the current definitions are cluster/store/functions/070_event_tags_added.sql and
-- 080_event_tags_removed.sql, which replace these right after (cluster/store/migrations.py).
CREATE FUNCTION relay_event_tags_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_tags (tagvalue, event_created_at, event_id, event_kind)
    SELECT DISTINCT v, a.created_at, a.id, a.kind
    FROM added a CROSS JOIN LATERAL unnest(a.tagvalues) AS v
    WHERE cardinality(a.tagvalues) > 0;
    RETURN NULL;
END
$$;

CREATE FUNCTION relay_event_tags_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM event_tags t
    USING removed r CROSS JOIN LATERAL unnest(r.tagvalues) AS v
    WHERE t.tagvalue = v AND t.event_created_at = r.created_at AND t.event_id = r.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_tags_added AFTER INSERT ON events
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT
    EXECUTE FUNCTION relay_event_tags_added();
CREATE TRIGGER events_tags_removed AFTER DELETE ON events
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT
    EXECUTE FUNCTION relay_event_tags_removed();

INSERT INTO event_tags (tagvalue, event_created_at, event_id, event_kind)
SELECT DISTINCT v, e.created_at, e.id, e.kind
FROM events e CROSS JOIN LATERAL unnest(e.tagvalues) AS v;

DROP INDEX events_tagvalues_idx;

DROP INDEX events_pubkey_created_idx;
CREATE INDEX events_pubkey_created_idx ON events (pubkey, created_at DESC, id)
    INCLUDE (kind, expires_at);

-- An insert-only table is vacuumed late by default (20% new rows); the visibility map that
-- index-only scans rely on should follow the writes more closely.
ALTER TABLE events SET (autovacuum_vacuum_insert_scale_factor = 0.02,
                        autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE event_tags SET (autovacuum_vacuum_insert_scale_factor = 0.02,
                            autovacuum_analyze_scale_factor = 0.02);
