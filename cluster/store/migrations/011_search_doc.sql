-- NIP-50 search reads each searchable event's document (its `content` as a tsvector) from a
-- column instead of recomputing it from `raw` for every examined row (JSON + to_tsvector: 15-40
-- us a row; the ranking and every check of a time-ordered walk paid it). The column is filled
-- only while search is enabled (cluster/store/search.py: a BEFORE INSERT trigger for the
-- searchable kinds, and a resumable backfill of stored events); NULL otherwise, which costs a
-- NULL-bit. ADD COLUMN without a default rewrites nothing. archived_events keeps the same
-- columns in the same order (the archive's move is `INSERT ... SELECT *`).
ALTER TABLE events ADD COLUMN search_doc tsvector;
ALTER TABLE archived_events ADD COLUMN search_doc tsvector;

-- Which text search configuration the stored documents are in, and how far the backfill of
-- stored events has come (newest first: the cursor is the last (created_at, id) done).
CREATE TABLE search_state (
    only_row          boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    config            text    NOT NULL,
    cursor_created_at bigint,
    cursor_id         bytea,
    complete          boolean NOT NULL DEFAULT false
);

-- The index of the previous layout (an expression index on to_tsvector(raw)) and its
-- statistics: the relay builds the column's index when search is enabled.
DROP INDEX IF EXISTS events_search_idx;
DROP STATISTICS IF EXISTS events_search_stats;
