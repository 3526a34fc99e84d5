-- The archive tier: the tag rows of an archived event removed (NIP-09, NIP-62, NIP-40 purge,
-- stored again) go with it, by a statement-level trigger (migration 010).
CREATE OR REPLACE FUNCTION relay_archived_tags_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM archived_event_tags t
    USING removed r CROSS JOIN LATERAL unnest(r.tagvalues) AS v
    WHERE t.tagvalue = v AND t.event_created_at = r.created_at AND t.event_id = r.id;
    RETURN NULL;
END
$$;
