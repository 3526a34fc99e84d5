-- Paid events: the relay's copy of channel state, its own claim accounting, and the outbox that
-- forwards accepted claims to the Dassie node. The event, its claim and its outbox row commit in
-- one transaction (relay_save_event below).

CREATE TABLE payment_channels (
    channel_id     text    PRIMARY KEY,
    blockchain     text    NOT NULL,
    sender_pubkey  text    NOT NULL,
    capacity       bigint  NOT NULL,
    expiration     bigint  NOT NULL,
    status         text    NOT NULL,
    highest_nonce  bigint  NOT NULL DEFAULT -1,  -- highest nonce this relay accepted
    spent          bigint  NOT NULL DEFAULT 0,   -- sum of amounts this relay accepted
    refreshed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_channels_open_idx ON payment_channels (status, blockchain)
    WHERE status = 'OPEN';

CREATE TABLE payment_claims (
    channel_id   text   NOT NULL REFERENCES payment_channels (channel_id),
    nonce        bigint NOT NULL,
    amount       bigint NOT NULL,
    event_id     bytea  NOT NULL,
    accepted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, nonce)              -- the seed's (channel_id, nonce) index
);
CREATE INDEX payment_claims_event_idx ON payment_claims (event_id);

CREATE TABLE payment_outbox (
    id               bigserial PRIMARY KEY,
    channel_id       text   NOT NULL,
    nonce            bigint NOT NULL,
    amount           bigint NOT NULL,
    event_id         bytea  NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    acked_at         timestamptz,
    UNIQUE (channel_id, nonce)
);
CREATE INDEX payment_outbox_pending_idx ON payment_outbox (next_attempt_at)
    WHERE acked_at IS NULL;

-- Operator price overrides (relay-cluster pricing set ...), re-read by workers periodically.
CREATE TABLE kind_prices (
    kind        integer PRIMARY KEY CHECK (kind BETWEEN 0 AND 65535),
    sats        bigint  NOT NULL CHECK (sats >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

DROP FUNCTION relay_save_event(bytea, bytea, bigint, integer, text, bigint, text[], text,
                               text[], text[]);

-- Save one event with every NIP-01/NIP-09 rule applied and, when p_channel is not NULL, charge
-- its claim exactly once. Returns 'stored', 'duplicate', 'superseded', 'deleted', or for paid
-- events 'stale_nonce' / 'insufficient_balance' (nothing is stored or charged then).
-- Duplicates, superseded and deleted events are decided before charging: never charged.
CREATE FUNCTION relay_save_event(
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
    v_target  text;
    v_nonce   bigint;
    v_replace bytea;
BEGIN
    PERFORM pg_advisory_xact_lock(relay_lock_key(id_hex));
    IF p_address IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(relay_lock_key(p_address));
    END IF;

    IF EXISTS (SELECT 1 FROM events WHERE id = p_id) THEN
        RETURN 'duplicate';
    END IF;
    IF EXISTS (SELECT 1 FROM deletions WHERE target = id_hex AND pubkey = p_pubkey) THEN
        RETURN 'deleted';
    END IF;

    IF p_address IS NOT NULL THEN
        IF EXISTS (SELECT 1 FROM deletions
                   WHERE target = p_address AND pubkey = p_pubkey
                     AND deleted_at >= p_created_at) THEN
            RETURN 'deleted';
        END IF;
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
        -- Our copy of the channel, refreshed with the state the claim was verified against.
        INSERT INTO payment_channels AS c
            (channel_id, blockchain, sender_pubkey, capacity, expiration, status)
        VALUES (p_channel, p_blockchain, p_sender_pubkey, p_capacity, p_expiration, p_status)
        ON CONFLICT (channel_id) DO UPDATE
            SET blockchain = excluded.blockchain, sender_pubkey = excluded.sender_pubkey,
                capacity = excluded.capacity, expiration = excluded.expiration,
                status = excluded.status, refreshed_at = now();
        -- The conditional update decides (row lock + re-check under READ COMMITTED): of two
        -- transactions with the same nonce, on any worker of any instance, exactly one wins.
        UPDATE payment_channels
           SET highest_nonce = p_nonce, spent = spent + p_amount
         WHERE channel_id = p_channel AND highest_nonce < p_nonce
           AND spent + p_amount <= capacity
        RETURNING highest_nonce INTO v_nonce;
        IF NOT FOUND THEN
            SELECT highest_nonce INTO v_nonce FROM payment_channels WHERE channel_id = p_channel;
            IF v_nonce >= p_nonce THEN
                RETURN 'stale_nonce';
            END IF;
            RETURN 'insufficient_balance';
        END IF;
        INSERT INTO payment_claims (channel_id, nonce, amount, event_id)
        VALUES (p_channel, p_nonce, p_amount, p_id);
        INSERT INTO payment_outbox (channel_id, nonce, amount, event_id)
        VALUES (p_channel, p_nonce, p_amount, p_id);
    END IF;

    IF v_replace IS NOT NULL THEN
        DELETE FROM events WHERE id = v_replace;
    END IF;

    INSERT INTO events (id, pubkey, created_at, kind, address, expires_at, tagvalues, raw)
    VALUES (p_id, p_pubkey, p_created_at, p_kind, p_address, p_expires_at, p_tagvalues, p_raw);

    FOREACH v_target IN ARRAY coalesce(p_delete_ids, '{}') LOOP
        PERFORM pg_advisory_xact_lock(relay_lock_key(v_target));
        INSERT INTO deletions (target, pubkey, deleted_at) VALUES (v_target, p_pubkey, p_created_at)
        ON CONFLICT (target, pubkey)
        DO UPDATE SET deleted_at = greatest(deletions.deleted_at, excluded.deleted_at);
        DELETE FROM events
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
    RETURN 'stored';
END
$$;
