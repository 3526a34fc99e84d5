-- NIP-09, a kind-5 event just stored: record a tombstone per target (so the target cannot come
-- back) and remove the author's own targets. Targets are pre-filtered by the caller
-- (cluster/nostr/deletion.py: sorted, addresses of this author only); each is locked like a
-- save of it, so a deletion cannot race the insert of its target. A deletion never removes
-- another deletion (kind 5) by id; an address loses its versions up to the deletion's time.
-- Ids are looked up in both tiers (archived_events, migration 010); addresses need not be:
-- replaceable and addressable kinds are never archived.
CREATE OR REPLACE FUNCTION relay_apply_deletion(
    p_pubkey bytea, p_created_at bigint, p_delete_ids text[], p_delete_addresses text[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_target text;
BEGIN
    FOREACH v_target IN ARRAY coalesce(p_delete_ids, '{}') LOOP
        PERFORM pg_advisory_xact_lock(relay_lock_key(v_target));
        INSERT INTO deletions (target, pubkey, deleted_at) VALUES (v_target, p_pubkey, p_created_at)
        ON CONFLICT (target, pubkey)
        DO UPDATE SET deleted_at = greatest(deletions.deleted_at, excluded.deleted_at);
        DELETE FROM events
        WHERE id = decode(v_target, 'hex') AND pubkey = p_pubkey AND kind <> 5;
        -- After events: a batch moving the target commits before this reads the archive.
        DELETE FROM archived_events
        WHERE id = decode(v_target, 'hex') AND pubkey = p_pubkey AND kind <> 5;
    END LOOP;
    FOREACH v_target IN ARRAY coalesce(p_delete_addresses, '{}') LOOP
        PERFORM pg_advisory_xact_lock(relay_lock_key(v_target));
        INSERT INTO deletions (target, pubkey, deleted_at) VALUES (v_target, p_pubkey, p_created_at)
        ON CONFLICT (target, pubkey)
        DO UPDATE SET deleted_at = greatest(deletions.deleted_at, excluded.deleted_at);
        DELETE FROM events
        WHERE address = v_target AND pubkey = p_pubkey AND created_at <= p_created_at;
    END LOOP;
END
$$;
