-- The ledger node's state, in its own schema "ledger" so it can share a database with the relay
-- (whose tables live in "public"). The claims table is the record; channels.spent and
-- channels.highest_nonce are kept equal to sum(claims.amount) and max(claims.nonce) (or -1) by
-- the transaction that inserts a claim, so reading a channel's state costs one row.

CREATE TABLE ledger.channels (
    -- PostgreSQL regexes allow repetition counts up to 255 only, hence length() for the bound.
    channel_id    text PRIMARY KEY
                  CHECK (channel_id ~ '^[A-Za-z0-9_.:-]+$' AND length(channel_id) <= 256),
    blockchain    text NOT NULL CHECK (blockchain IN ('BTC', 'BASE', 'AKT', 'XRP')),
    sender        text NOT NULL,
    sender_pubkey text NOT NULL CHECK (sender_pubkey ~ '^0[23][0-9a-f]{64}$'),
    recipient     text NOT NULL,
    capacity      bigint NOT NULL CHECK (capacity > 0),
    spent         bigint NOT NULL DEFAULT 0,
    highest_nonce bigint NOT NULL DEFAULT -1,
    expiration    bigint NOT NULL,
    -- EXPIRED is never stored: it is OPEN with expiration <= now, decided when read.
    status        text NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'CLOSED')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    closed_at     timestamptz,
    CHECK (spent >= 0 AND spent <= capacity),
    CHECK (highest_nonce >= -1)
);

CREATE TABLE ledger.claims (
    channel_id  text NOT NULL REFERENCES ledger.channels (channel_id),
    nonce       bigint NOT NULL CHECK (nonce >= 0),
    amount      bigint NOT NULL CHECK (amount > 0),
    event_id    text NOT NULL CHECK (event_id ~ '^[0-9a-f]{64}$'),
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, nonce)
);
