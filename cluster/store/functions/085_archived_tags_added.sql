-- The archive tier (migration 010): archived_event_tags follows archived_events as event_tags
-- follows events (070_event_tags_added.sql), by a statement-level trigger.
CREATE OR REPLACE FUNCTION relay_archived_tags_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO archived_event_tags (tagvalue, event_created_at, event_id, event_kind)
    SELECT DISTINCT v, a.created_at, a.id, a.kind
    FROM added a CROSS JOIN LATERAL unnest(a.tagvalues) AS v
    WHERE cardinality(a.tagvalues) > 0;
    RETURN NULL;
END
$$;
