-- Group commit in ONE statement: a batch of events as parallel arrays. Ragged per-event lists
-- (tag values, deletion targets) travel flattened with a count per event. One round trip per
-- batch instead of one per event.
-- Plain events (regular kinds, unpaid: most of the traffic) are saved together, set-based, by
-- relay_save_plain_events; the others (replaceable and addressable kinds, paid events) one by
-- one, in batch order, by relay_save_event. A batch that holds a NIP-09 deletion is saved one
-- by one throughout, in order, since the deletion may target another event of the same batch.
-- The caller binds every argument by name (`p_ids => ...`), generated from the fields of
-- cluster/store/writer.py SaveColumns, which must be these parameters, in this order, with
-- these types (tests/unit/store/test_save_columns.py checks it).
CREATE OR REPLACE FUNCTION relay_save_events(
    p_ids bytea[], p_pubkeys bytea[], p_created_at bigint[], p_kinds integer[],
    p_addresses text[], p_expires_at bigint[],
    p_tag_counts integer[], p_tagvalues text[], p_raws text[],
    p_delete_id_counts integer[], p_delete_ids text[],
    p_delete_address_counts integer[], p_delete_addresses text[],
    p_channels text[], p_nonces bigint[], p_amounts bigint[],
    p_blockchains text[], p_sender_pubkeys text[], p_capacities bigint[],
    p_expirations bigint[], p_statuses text[]
) RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    n         integer := coalesce(array_length(p_ids, 1), 0);
    outcomes  text[];
    tag_at    integer := 0;
    id_at     integer := 0;
    addr_at   integer := 0;
    i         integer;
BEGIN
    IF n = 0 THEN
        RETURN '{}';
    END IF;
    IF 5 = ANY (p_kinds) THEN
        outcomes := array_fill(NULL::text, ARRAY[n]);
    ELSE
        outcomes := relay_save_plain_events(
            p_ids, p_pubkeys, p_created_at, p_kinds, p_addresses, p_expires_at,
            p_tag_counts, p_tagvalues, p_raws, p_channels);
    END IF;
    FOR i IN 1 .. n LOOP
        IF outcomes[i] IS NULL THEN
            outcomes[i] := relay_save_event(
                p_ids[i], p_pubkeys[i], p_created_at[i], p_kinds[i], p_addresses[i],
                p_expires_at[i],
                coalesce(p_tagvalues[tag_at + 1 : tag_at + p_tag_counts[i]], '{}'),
                p_raws[i],
                coalesce(p_delete_ids[id_at + 1 : id_at + p_delete_id_counts[i]], '{}'),
                coalesce(p_delete_addresses[addr_at + 1 : addr_at + p_delete_address_counts[i]],
                         '{}'),
                p_channels[i], p_nonces[i], p_amounts[i], p_blockchains[i], p_sender_pubkeys[i],
                p_capacities[i], p_expirations[i], p_statuses[i]
            );
        END IF;
        tag_at := tag_at + p_tag_counts[i];
        id_at := id_at + p_delete_id_counts[i];
        addr_at := addr_at + p_delete_address_counts[i];
    END LOOP;
    RETURN outcomes;
END
$$;
