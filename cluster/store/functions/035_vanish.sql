-- NIP-62: delete every event of p_pubkey created at or before p_until, the gift wraps (kind 1059)
-- addressed to it, and its NIP-09 deletion records; remember the request so the save functions
-- refuse those events from now on. Returns how many events were deleted.
-- SHARE lock on events: it waits for every transaction that is inserting (their rows are then
-- visible to the DELETE below) and holds new inserts back until this one commits (they then see
-- the `vanished` row). Writers pause for as long as the deletion takes; readers do not.
-- Requests are rare, and the hot path pays only one primary-key probe of `vanished`.
CREATE OR REPLACE FUNCTION relay_vanish(
    p_pubkey bytea, p_until bigint, p_request_id bytea, p_request text
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_deleted bigint;
    v_wraps   bigint;
    v_archived bigint;
BEGIN
    LOCK TABLE events IN SHARE MODE;
    INSERT INTO vanished AS v (pubkey, until, request_id, request)
    VALUES (p_pubkey, p_until, p_request_id, p_request)
    ON CONFLICT (pubkey) DO UPDATE
        SET until = GREATEST(v.until, EXCLUDED.until),
            request_id = CASE WHEN EXCLUDED.until > v.until THEN EXCLUDED.request_id
                              ELSE v.request_id END,
            request = CASE WHEN EXCLUDED.until > v.until THEN EXCLUDED.request ELSE v.request END,
            requested_at = now();
    DELETE FROM events WHERE pubkey = p_pubkey AND created_at <= p_until;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    DELETE FROM events e
    USING event_tags t
    WHERE t.tagvalue = 'p:' || encode(p_pubkey, 'hex') AND t.event_kind = 1059
      AND t.event_created_at <= p_until AND e.id = t.event_id;
    GET DIAGNOSTICS v_wraps = ROW_COUNT;
    -- The archive tier (migration 010): the SHARE lock above also waits for a moving batch.
    DELETE FROM archived_events WHERE pubkey = p_pubkey AND created_at <= p_until;
    GET DIAGNOSTICS v_archived = ROW_COUNT;
    v_deleted := v_deleted + v_archived;
    DELETE FROM archived_events e
    USING archived_event_tags t
    WHERE t.tagvalue = 'p:' || encode(p_pubkey, 'hex') AND t.event_kind = 1059
      AND t.event_created_at <= p_until AND e.id = t.event_id;
    GET DIAGNOSTICS v_archived = ROW_COUNT;
    v_wraps := v_wraps + v_archived;
    DELETE FROM deletions WHERE pubkey = p_pubkey AND deleted_at <= p_until;
    RETURN v_deleted + v_wraps;
END
$$;
