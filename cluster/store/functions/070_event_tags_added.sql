-- event_tags follows events (migration 004 made the triggers): one row per distinct tag value
-- of each inserted event, by a statement-level trigger, so every way an event is stored (save,
-- replacement, bulk COPY) keeps the tag index in step without the save function knowing.
CREATE OR REPLACE FUNCTION relay_event_tags_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_tags (tagvalue, event_created_at, event_id, event_kind)
    SELECT DISTINCT v, a.created_at, a.id, a.kind
    FROM added a CROSS JOIN LATERAL unnest(a.tagvalues) AS v
    WHERE cardinality(a.tagvalues) > 0;
    RETURN NULL;
END
$$;
