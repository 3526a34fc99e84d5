-- Events, their indexes and NIP-09 tombstones. The functions that save into them (the lock key,
-- relay_save_event) are in cluster/store/functions/, applied after every migrate.

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
