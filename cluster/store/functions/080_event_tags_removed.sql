-- event_tags follows events: the rows of every removed event (replacement, NIP-09 deletion,
-- NIP-40 purge) go with it, by a statement-level trigger (migration 004).
CREATE OR REPLACE FUNCTION relay_event_tags_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM event_tags t
    USING removed r CROSS JOIN LATERAL unnest(r.tagvalues) AS v
    WHERE t.tagvalue = v AND t.event_created_at = r.created_at AND t.event_id = r.id;
    RETURN NULL;
END
$$;
