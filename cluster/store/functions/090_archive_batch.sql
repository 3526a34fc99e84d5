-- The archive tier (migration 010, cluster/store/archive.py).
-- Move up to p_batch events of p_kind created before p_before to the archive, oldest first, in
-- the caller's (short) transaction; returns how many moved. SKIP LOCKED: a row a writer holds
-- (a NIP-09 deletion, the purge) is left for the next batch, so neither side waits.
CREATE OR REPLACE FUNCTION relay_archive_batch(p_kind integer, p_before bigint, p_batch integer)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_moved bigint;
BEGIN
    WITH picked AS (
        SELECT id FROM events
        WHERE kind = p_kind AND created_at < p_before
        ORDER BY kind, created_at LIMIT p_batch
        FOR UPDATE SKIP LOCKED
    ), moved AS (
        DELETE FROM events e USING picked p WHERE e.id = p.id RETURNING e.*
    )
    INSERT INTO archived_events SELECT * FROM moved;
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    RETURN v_moved;
END
$$;
