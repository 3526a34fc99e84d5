-- Events, their indexes, NIP-09 tombstones and the single-round-trip save function.

CREATE TABLE events (
    id          bytea   PRIMARY KEY,          -- 32-byte event id
    pubkey      bytea   NOT NULL,             -- 32-byte author key
    created_at  bigint  NOT NULL,
    kind        integer NOT NULL,
    address     text,                         -- kind:pubkey:d for replaceable/addressable kinds
    expires_at  bigint,                       -- NIP-40 expiration, unix seconds
    tagvalues   text[]  NOT NULL DEFAULT '{}',-- 'letter:value' for each single-letter tag
    raw         text    NOT NULL,             -- the event JSON exactly as served to clients
    stored_at   timestamptz NOT NULL DEFAULT now()
);

-- The seed's indexes: time-ordered scans, by kind, by author (each also serves the bare column).
CREATE INDEX events_created_at_idx      ON events (created_at DESC, id);
CREATE INDEX events_kind_created_at_idx ON events (kind, created_at DESC);
CREATE INDEX events_pubkey_created_idx  ON events (pubkey, created_at DESC);
CREATE INDEX events_pubkey_kind_idx     ON events (pubkey, kind, created_at DESC);
-- Tag queries: `tagvalues && ARRAY['e:<id>', ...]`.
CREATE INDEX events_tagvalues_idx       ON events USING gin (tagvalues);
-- One live version per replaceable/addressable address, enforced by the database itself.
CREATE UNIQUE INDEX events_address_idx  ON events (address) WHERE address IS NOT NULL;
CREATE INDEX events_expires_at_idx      ON events (expires_at) WHERE expires_at IS NOT NULL;

-- NIP-09: a deleted event (by id) or address (up to deleted_at) must not come back.
CREATE TABLE deletions (
    target      text   NOT NULL,              -- event id (hex) or address
    pubkey      bytea  NOT NULL,              -- the author who asked for the deletion
    deleted_at  bigint NOT NULL,              -- created_at of the deletion request
    PRIMARY KEY (target, pubkey)
);

-- Lock keys: writers of the same id or address are serialised, so replace/delete decisions
-- are made on committed data even when many workers race (READ COMMITTED, fresh snapshot per
-- statement after the lock is granted).
CREATE FUNCTION relay_lock_key(k text) RETURNS bigint
    LANGUAGE sql IMMUTABLE AS $$ SELECT hashtextextended(k, 0) $$;

-- Save one event with every NIP-01/NIP-09 rule applied. Returns:
--   'stored'      inserted (and, for kind 5, the deletions applied)
--   'duplicate'   the same id is already stored
--   'superseded'  a newer (or same-time, lower-id) version of this address is stored
--   'deleted'     the author deleted this id or this address after created_at
CREATE FUNCTION relay_save_event(
    p_id bytea, p_pubkey bytea, p_created_at bigint, p_kind integer, p_address text,
    p_expires_at bigint, p_tagvalues text[], p_raw text,
    p_delete_ids text[], p_delete_addresses text[]
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    id_hex   text := encode(p_id, 'hex');
    v_current record;
    v_target  text;
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
            DELETE FROM events WHERE id = v_current.id;
        END IF;
    END IF;

    INSERT INTO events (id, pubkey, created_at, kind, address, expires_at, tagvalues, raw)
    VALUES (p_id, p_pubkey, p_created_at, p_kind, p_address, p_expires_at, p_tagvalues, p_raw);

    -- Kind 5: targets are pre-filtered by the caller (sorted, addresses of this author only).
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
