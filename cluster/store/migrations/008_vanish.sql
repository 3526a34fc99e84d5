-- NIP-62 request to vanish (cluster/store/vanish.py, functions/035_vanish.sql): one row per
-- author who asked this relay to delete everything they published up to `until` (the request's
-- created_at). The signed request is kept for bookkeeping, as NIP-62 allows; the save functions
-- refuse any event of that author created at or before `until`, so nothing deleted comes back
-- (republished, synced or streamed).
CREATE TABLE vanished (
    pubkey       bytea       PRIMARY KEY,
    until        bigint      NOT NULL,
    request_id   bytea       NOT NULL,
    request      text        NOT NULL,      -- the kind-62 event, as received
    requested_at timestamptz NOT NULL DEFAULT now()
);
