-- The set-based part of a batch save: every PLAIN event of the batch (a regular kind, unpaid: no
-- address to replace, nothing to charge; and no copy of it in the batch that is paid) in three
-- statements for the whole batch instead of a PL/pgSQL call per event. Returns one outcome per event of the batch, NULL for the events that
-- are not plain (relay_save_events saves those one by one with relay_save_event).
-- The caller uses it only for batches without a NIP-09 deletion (kind 5): then nothing else in
-- the batch can change what a plain event's outcome is, so saving them first is the same as
-- saving them in order.
CREATE OR REPLACE FUNCTION relay_save_plain_events(
    p_ids bytea[], p_pubkeys bytea[], p_created_at bigint[], p_kinds integer[],
    p_addresses text[], p_expires_at bigint[], p_tag_counts integer[], p_tagvalues text[],
    p_raws text[], p_channels text[]
) RETURNS text[] LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_plain    boolean[];
    v_inserted bytea[];
    v_outcomes text[];
BEGIN
    -- 0. Which events are plain: every copy of the id in the batch is unpaid and has no address.
    SELECT array_agg(t.plain ORDER BY t.ord) INTO v_plain
    FROM (
        SELECT u.ord, bool_and(u.address IS NULL AND u.channel IS NULL)
                          OVER (PARTITION BY u.id) AS plain
        FROM unnest(p_ids, p_addresses, p_channels) WITH ORDINALITY AS u(id, address, channel, ord)
    ) AS t;
    -- 1. The same id locks relay_save_event and relay_apply_deletion take, in key order (two
    --    batches never wait on each other in a circle), so a deletion cannot race an insert.
    PERFORM pg_advisory_xact_lock(k) FROM (
        SELECT DISTINCT relay_lock_key(encode(t.id, 'hex')) AS k
        FROM unnest(p_ids, v_plain) AS t(id, plain)
        WHERE t.plain
        ORDER BY 1
    ) AS keys;
    -- 2. Insert the first copy of each id that is neither stored nor deleted. A new statement
    --    takes a new snapshot, after the locks were granted: it sees every committed deletion.
    --    One INSERT for the batch: the tag trigger fires once, with every new row.
    WITH input AS (
        SELECT t.*, sum(t.tag_count) OVER (ORDER BY t.ord) - t.tag_count AS tag_at
        FROM unnest(p_ids, p_pubkeys, p_created_at, p_kinds, p_expires_at, p_tag_counts, p_raws,
                    v_plain) WITH ORDINALITY
             AS t(id, pubkey, created_at, kind, expires_at, tag_count, raw, plain, ord)
    ), plain AS (
        SELECT DISTINCT ON (i.id) i.*
        FROM input i
        WHERE i.plain
        ORDER BY i.id, i.ord
    ), inserted AS (
        INSERT INTO events (id, pubkey, created_at, kind, expires_at, tagvalues, raw)
        SELECT p.id, p.pubkey, p.created_at, p.kind, p.expires_at,
               coalesce(p_tagvalues[p.tag_at + 1 : p.tag_at + p.tag_count], '{}'), p.raw
        FROM plain p
        WHERE NOT EXISTS (
            SELECT 1 FROM deletions d WHERE d.target = encode(p.id, 'hex') AND d.pubkey = p.pubkey)
        ORDER BY p.ord
        ON CONFLICT (id) DO NOTHING
        RETURNING id
    )
    SELECT array_agg(id) INTO v_inserted FROM inserted;
    -- 3. One outcome per event, in batch order. This statement sees the rows step 2 inserted;
    --    a later copy of an id in the batch is a duplicate of the first, or deleted like it.
    SELECT array_agg(
        CASE
            WHEN NOT t.plain THEN NULL
            WHEN s.id IS NOT NULL AND t.nth = 1 THEN 'stored'
            WHEN EXISTS (SELECT 1 FROM events e WHERE e.id = t.id) THEN 'duplicate'
            WHEN EXISTS (SELECT 1 FROM deletions d
                         WHERE d.target = encode(t.id, 'hex') AND d.pubkey = t.pubkey)
                THEN 'deleted'
            ELSE 'duplicate'
        END ORDER BY t.ord)
    INTO v_outcomes
    FROM (
        SELECT u.*, row_number() OVER (PARTITION BY u.id ORDER BY u.ord) AS nth
        FROM unnest(p_ids, p_pubkeys, v_plain) WITH ORDINALITY AS u(id, pubkey, plain, ord)
    ) AS t
    LEFT JOIN unnest(v_inserted) AS s(id) ON s.id = t.id;
    RETURN v_outcomes;
END
$$;
