-- NIP-86 relay management (cluster/store/moderation.py): the operator's decisions. Every worker
-- keeps all of them in memory (cluster/relay/moderation.py) and re-reads them when one changes,
-- so these tables stay small and are read whole; no index beyond the primary keys.
CREATE TABLE moderation_banned_pubkeys (
    pubkey     bytea       PRIMARY KEY,           -- 32-byte key whose events are refused
    reason     text        NOT NULL DEFAULT '',
    decided_at timestamptz NOT NULL DEFAULT now()
);

-- While this table has rows, only these keys may publish.
CREATE TABLE moderation_allowed_pubkeys (
    pubkey     bytea       PRIMARY KEY,
    reason     text        NOT NULL DEFAULT '',
    decided_at timestamptz NOT NULL DEFAULT now()
);

-- A banned event is deleted from `events` when banned and refused whenever it comes back.
CREATE TABLE moderation_banned_events (
    id         bytea       PRIMARY KEY,
    reason     text        NOT NULL DEFAULT '',
    decided_at timestamptz NOT NULL DEFAULT now()
);

-- While this table has rows, only these kinds are accepted.
CREATE TABLE moderation_allowed_kinds (
    kind       integer     PRIMARY KEY,
    decided_at timestamptz NOT NULL DEFAULT now()
);

-- New WebSocket connections from these addresses are refused (HTTP 403), open ones closed.
CREATE TABLE moderation_blocked_ips (
    ip         inet        PRIMARY KEY,
    reason     text        NOT NULL DEFAULT '',
    decided_at timestamptz NOT NULL DEFAULT now()
);

-- NIP-11 fields the operator changed at run time; they override the configured `info`.
CREATE TABLE moderation_relay_info (
    field      text        PRIMARY KEY CHECK (field IN ('name', 'description', 'icon')),
    value      text        NOT NULL,
    decided_at timestamptz NOT NULL DEFAULT now()
);
