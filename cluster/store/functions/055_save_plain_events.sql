-- The set-based part of a batch save: every PLAIN event of the batch (a regular kind, unpaid: no
-- address to replace, nothing to charge; and no copy of it in the batch that is paid) in a few
-- statements for the whole batch instead of a PL/pgSQL call per event. Returns one outcome per
-- event of the batch, NULL for the events that are not plain (relay_save_events saves those one
-- by one with relay_save_event).
-- The caller uses it only for batches without a NIP-09 deletion (kind 5): then nothing else in
-- the batch can change what a plain event's outcome is, so saving them first is the same as
-- saving them in order (tests/integration/test_store_batches.py compares both).
CREATE OR REPLACE FUNCTION relay_save_plain_events(p_rows relay_save_row[]) RETURNS text[]
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_plain    boolean[];
    v_inserted bytea[];
    v_outcomes text[];
BEGIN
    -- 0. Which events are plain: every copy of the id in the batch is unpaid and has no address.
    SELECT array_agg(t.plain ORDER BY t.i) INTO v_plain
    FROM (
        SELECT i, bool_and((p_rows[i]).address IS NULL AND (p_rows[i]).channel IS NULL)
                      OVER (PARTITION BY (p_rows[i]).id) AS plain
        FROM generate_subscripts(p_rows, 1) AS i
    ) AS t;
    -- 1. The same id locks relay_save_event and relay_apply_deletion take, in key order (two
    --    batches never wait on each other in a circle), so a deletion cannot race an insert.
    PERFORM pg_advisory_xact_lock(k) FROM (
        SELECT DISTINCT relay_lock_key((p_rows[i]).id) AS k
        FROM generate_subscripts(p_rows, 1) AS i
        WHERE v_plain[i]
        ORDER BY 1
    ) AS keys;
    -- 2. Insert the first copy of each id that is neither stored nor deleted. A new statement
    --    takes a new snapshot, after the locks were granted: it sees every committed deletion.
    --    One INSERT for the batch: the tag trigger fires once, with every new row.
    WITH input AS (
        SELECT i, decode((p_rows[i]).id, 'hex') AS id, decode((p_rows[i]).pubkey, 'hex') AS pubkey,
               (p_rows[i]).created_at AS created_at, (p_rows[i]).kind AS kind,
               (p_rows[i]).expires_at AS expires_at,
               coalesce((p_rows[i]).tagvalues, '{}') AS tagvalues, (p_rows[i]).raw AS raw
        FROM generate_subscripts(p_rows, 1) AS i
        WHERE v_plain[i]
    ), first_copies AS (
        SELECT DISTINCT ON (input.id) input.* FROM input ORDER BY input.id, input.i
    ), inserted AS (
        INSERT INTO events (id, pubkey, created_at, kind, expires_at, tagvalues, raw)
        SELECT f.id, f.pubkey, f.created_at, f.kind, f.expires_at, f.tagvalues, f.raw
        FROM first_copies f
        WHERE NOT EXISTS (
            SELECT 1 FROM deletions d WHERE d.target = encode(f.id, 'hex') AND d.pubkey = f.pubkey)
          AND NOT EXISTS (
            SELECT 1 FROM vanished v WHERE v.pubkey = f.pubkey AND v.until >= f.created_at)
        ORDER BY f.i
        ON CONFLICT (id) DO NOTHING
        RETURNING id
    )
    SELECT array_agg(id) INTO v_inserted FROM inserted;
    -- 3. One outcome per event, in batch order. This statement sees the rows step 2 inserted;
    --    a later copy of an id in the batch is a duplicate of the first, or deleted like it.
    SELECT array_agg(
        CASE
            WHEN NOT v_plain[t.i] THEN NULL
            WHEN s.id IS NOT NULL AND t.nth = 1 THEN 'stored'
            WHEN EXISTS (SELECT 1 FROM events e WHERE e.id = t.id) THEN 'duplicate'
            WHEN EXISTS (SELECT 1 FROM deletions d
                         WHERE d.target = encode(t.id, 'hex') AND d.pubkey = t.pubkey)
                THEN 'deleted'
            WHEN EXISTS (SELECT 1 FROM vanished v
                         WHERE v.pubkey = t.pubkey AND v.until >= t.created_at)
                THEN 'vanished'
            ELSE 'duplicate'
        END ORDER BY t.i)
    INTO v_outcomes
    FROM (
        SELECT i, decode((p_rows[i]).id, 'hex') AS id, decode((p_rows[i]).pubkey, 'hex') AS pubkey,
               (p_rows[i]).created_at AS created_at,
               row_number() OVER (PARTITION BY (p_rows[i]).id ORDER BY i) AS nth
        FROM generate_subscripts(p_rows, 1) AS i
    ) AS t
    LEFT JOIN unnest(v_inserted) AS s(id) ON s.id = t.id;
    RETURN v_outcomes;
END
$$;
