-- Group commit in ONE statement: a batch of events as a JSON array of `relay_save_row`
-- objects (migration 005; cluster/store/writer.py SaveRow), one outcome per event, in order.
-- A batch of at least PLAIN_MIN events without a NIP-09 deletion saves its plain events
-- (regular kinds, unpaid: most of the traffic) set-based with relay_save_plain_events, and the
-- others (replaceable and addressable kinds, paid events) one by one with relay_save_event. A
-- smaller batch, or one that holds a deletion (it may target another event of the same batch),
-- is saved one by one, in order. Below a few events the set-based statements cost more than
-- the per-event calls they replace (docs/PERFORMANCE-LOG.md).
CREATE OR REPLACE FUNCTION relay_save_events(p_batch json) RETURNS text[] LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    plain_min CONSTANT integer := 4;
    v_rows    relay_save_row[];
    outcomes  text[];
    n         integer;
    r         relay_save_row;
BEGIN
    SELECT array_agg(t) INTO v_rows FROM json_populate_recordset(NULL::relay_save_row, p_batch) t;
    n := coalesce(array_length(v_rows, 1), 0);
    IF n = 0 THEN
        RETURN '{}';
    END IF;
    IF n >= plain_min AND NOT EXISTS (SELECT 1 FROM unnest(v_rows) u WHERE u.kind = 5) THEN
        outcomes := relay_save_plain_events(v_rows);
    ELSE
        outcomes := array_fill(NULL::text, ARRAY[n]);
    END IF;
    FOR i IN 1 .. n LOOP
        IF outcomes[i] IS NULL THEN
            r := v_rows[i];
            outcomes[i] := relay_save_event(
                decode(r.id, 'hex'), decode(r.pubkey, 'hex'), r.created_at, r.kind, r.address,
                r.expires_at, coalesce(r.tagvalues, '{}'), r.raw,
                coalesce(r.delete_ids, '{}'), coalesce(r.delete_addresses, '{}'),
                r.channel, r.nonce, r.amount, r.blockchain, r.sender_pubkey, r.capacity,
                r.expiration, r.status
            );
        END IF;
    END LOOP;
    RETURN outcomes;
END
$$;
