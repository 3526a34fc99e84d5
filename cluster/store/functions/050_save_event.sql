-- Save one event with every NIP-01/NIP-09 rule applied and, when p_channel is not NULL, charge
-- its claim exactly once. Returns (cluster/store/writer.py SaveOutcome):
--   'stored'               inserted (and, for kind 5, the deletions applied)
--   'duplicate'            the same id is already stored
--   'superseded'           a newer (or same-time, lower-id) version of this address is stored
--   'deleted'              the author deleted this id or this address after created_at
--   'vanished'             the author asked this relay to delete everything up to a time at or
--                          after created_at (NIP-62, functions/035_vanish.sql)
--   'stale_nonce'          paid: the channel already accepted this nonce or a higher one
--   'insufficient_balance' paid: the claim would exceed the channel's capacity
-- Duplicates, superseded and deleted events are decided before charging: never charged; a
-- refused charge stores nothing. Advisory locks on the id and the address serialise concurrent
-- writers of the same event or address on every worker of every instance.
CREATE OR REPLACE FUNCTION relay_save_event(
    p_id bytea, p_pubkey bytea, p_created_at bigint, p_kind integer, p_address text,
    p_expires_at bigint, p_tagvalues text[], p_raw text,
    p_delete_ids text[], p_delete_addresses text[],
    p_channel text, p_nonce bigint, p_amount bigint,
    p_blockchain text, p_sender_pubkey text, p_capacity bigint, p_expiration bigint,
    p_status text
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    id_hex    text := encode(p_id, 'hex');
    v_current record;
    v_replace bytea;
    v_charge  text;
BEGIN
    PERFORM pg_advisory_xact_lock(relay_lock_key(id_hex));
    IF p_address IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(relay_lock_key(p_address));
    END IF;

    IF EXISTS (SELECT 1 FROM events WHERE id = p_id) THEN
        RETURN 'duplicate';
    END IF;
    IF relay_is_deleted(id_hex, p_pubkey, p_address, p_created_at) THEN
        RETURN 'deleted';
    END IF;
    IF EXISTS (SELECT 1 FROM vanished WHERE pubkey = p_pubkey AND until >= p_created_at) THEN
        RETURN 'vanished';
    END IF;

    IF p_address IS NOT NULL THEN
        SELECT id, created_at INTO v_current FROM events WHERE address = p_address;
        IF FOUND THEN
            IF v_current.created_at > p_created_at
               OR (v_current.created_at = p_created_at AND v_current.id < p_id) THEN
                RETURN 'superseded';
            END IF;
            v_replace := v_current.id;
        END IF;
    END IF;

    IF p_channel IS NOT NULL THEN
        v_charge := relay_charge_claim(p_id, p_channel, p_nonce, p_amount, p_blockchain,
                                       p_sender_pubkey, p_capacity, p_expiration, p_status);
        IF v_charge <> 'charged' THEN
            RETURN v_charge;
        END IF;
    END IF;

    IF v_replace IS NOT NULL THEN
        DELETE FROM events WHERE id = v_replace;
    END IF;

    INSERT INTO events (id, pubkey, created_at, kind, address, expires_at, tagvalues, raw)
    VALUES (p_id, p_pubkey, p_created_at, p_kind, p_address, p_expires_at, p_tagvalues, p_raw);

    IF cardinality(p_delete_ids) > 0 OR cardinality(p_delete_addresses) > 0 THEN
        PERFORM relay_apply_deletion(p_pubkey, p_created_at, p_delete_ids, p_delete_addresses);
    END IF;
    RETURN 'stored';
END
$$;
