-- The batch save takes one `relay_save_row` per event (a named composite type, built from the
-- JSON the relay sends: cluster/store/writer.py SaveRow has the same fields, in this order,
-- which tests/unit/store/test_save_rows.py checks) instead of 21 parallel arrays. Decoding 21
-- binary arrays per batch cost the relay more CPU than the rest of the write path together.
-- The old signature goes; cluster/store/functions/060_save_events.sql defines the new one.
DROP FUNCTION IF EXISTS relay_save_events(
    bytea[], bytea[], bigint[], integer[], text[], bigint[], integer[], text[], text[],
    integer[], text[], integer[], text[], text[], bigint[], bigint[], text[], text[], bigint[],
    bigint[], text[]);
DROP FUNCTION IF EXISTS relay_save_plain_events(
    bytea[], bytea[], bigint[], integer[], text[], bigint[], integer[], text[], text[], text[]);

CREATE TYPE relay_save_row AS (
    id               text,      -- 64 hex
    pubkey           text,      -- 64 hex
    created_at       bigint,
    kind             integer,
    address          text,      -- kind:pubkey:d of replaceable/addressable kinds, else NULL
    expires_at       bigint,    -- NIP-40
    tagvalues        text[],    -- 'letter:value' of each single-letter tag
    raw              text,      -- the event JSON as served
    delete_ids       text[],    -- NIP-09 targets of a kind-5 event (else empty)
    delete_addresses text[],
    channel          text,      -- the charge (all NULL for an unpaid event): charges.py
    nonce            bigint,
    amount           bigint,
    blockchain       text,
    sender_pubkey    text,
    capacity         bigint,
    expiration       bigint,
    status           text
);
