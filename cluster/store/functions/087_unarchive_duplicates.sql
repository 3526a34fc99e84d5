-- The archive tier: an event is in one tier only, so one stored again in events (a sync, an
-- import) leaves the archive (trigger events_unarchive_duplicates, migration 010).
-- One primary-key probe of the archive per stored event (a few microseconds, nothing to find
-- almost always): the price of "an event is in one tier only" without touching the save path.
CREATE OR REPLACE FUNCTION relay_unarchive_duplicates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- = ANY(ARRAY(...)): primary-key probes whatever the planner guesses of the batch's size.
    DELETE FROM archived_events WHERE id = ANY(ARRAY(SELECT id FROM added));
    RETURN NULL;
END
$$;
