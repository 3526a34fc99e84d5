-- The archive tier (cluster/store/archive.py, docs/OPERATIONS.md "The archive tier"): events of
-- the kinds in archive.horizons that are older than their kind's horizon move here in short
-- batches, so the hot `events` table and its indexes stay the size of the recent past.
--
-- Same columns as events, so a move is `INSERT ... SELECT *` and the read path is the same SQL
-- with the table names swapped (cluster/store/sql.py). Only regular kinds are archived
-- (config.py refuses others): replaceable and addressable versions never leave `events`, so
-- the save functions' supersede lookups need no change.
CREATE TABLE archived_events (LIKE events INCLUDING DEFAULTS);
ALTER TABLE archived_events ADD PRIMARY KEY (id);
-- The seed's indexes: the read path's scans are those of events.
CREATE INDEX archived_events_created_at_idx      ON archived_events (created_at DESC, id);
CREATE INDEX archived_events_kind_created_at_idx ON archived_events (kind, created_at DESC);
CREATE INDEX archived_events_pubkey_created_idx  ON archived_events (pubkey, created_at DESC, id)
    INCLUDE (kind, expires_at);
CREATE INDEX archived_events_pubkey_kind_idx     ON archived_events (pubkey, kind, created_at DESC);
CREATE INDEX archived_events_expires_at_idx      ON archived_events (expires_at)
    WHERE expires_at IS NOT NULL;

-- Tag rows of archived events, kept apart: event_tags' triggers drop a moved event's rows, and
-- these triggers give them back here, so a tag scan of either tier joins only its own table
-- and stays the B-tree walk of "Query plans".
CREATE TABLE archived_event_tags (LIKE event_tags);
CREATE INDEX archived_event_tags_recent_idx
    ON archived_event_tags (tagvalue, event_created_at DESC, event_id) INCLUDE (event_kind);

-- Placeholder bodies; the current ones are functions/090_archive_batch.sql.
CREATE FUNCTION relay_archived_tags_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RETURN NULL; END $$;
CREATE FUNCTION relay_archived_tags_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RETURN NULL; END $$;
CREATE FUNCTION relay_unarchive_duplicates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RETURN NULL; END $$;

CREATE TRIGGER archived_events_tags_added AFTER INSERT ON archived_events
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT
    EXECUTE FUNCTION relay_archived_tags_added();
CREATE TRIGGER archived_events_tags_removed AFTER DELETE ON archived_events
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT
    EXECUTE FUNCTION relay_archived_tags_removed();
-- An event is in one tier only: one stored again (a sync, an import) leaves the archive.
CREATE TRIGGER events_unarchive_duplicates AFTER INSERT ON events
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT
    EXECUTE FUNCTION relay_unarchive_duplicates();

ALTER TABLE archived_events SET (autovacuum_vacuum_insert_scale_factor = 0.02,
                                 autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE archived_event_tags SET (autovacuum_vacuum_insert_scale_factor = 0.02,
                                     autovacuum_analyze_scale_factor = 0.02);
