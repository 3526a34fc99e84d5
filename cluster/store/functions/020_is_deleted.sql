-- NIP-09, before storing: the author deleted this id (at any time), or this address at or after
-- the event's created_at (a newer version published after the deletion is allowed back).
-- The caller holds the advisory locks on the id and the address (relay_save_event). Volatile
-- (the default) on purpose: each query in it reads a fresh snapshot, taken after those locks
-- were granted, which also sees the deletions made earlier in the same batch.
CREATE OR REPLACE FUNCTION relay_is_deleted(
    p_id_hex text, p_pubkey bytea, p_address text, p_created_at bigint
) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM deletions WHERE target = p_id_hex AND pubkey = p_pubkey) THEN
        RETURN true;
    END IF;
    RETURN p_address IS NOT NULL AND EXISTS (
        SELECT 1 FROM deletions
        WHERE target = p_address AND pubkey = p_pubkey AND deleted_at >= p_created_at);
END
$$;
