-- Paid events: the relay's copy of channel state, its own claim accounting, and the outbox that
-- forwards accepted claims to the Dassie node. The event, its claim and its outbox row commit in
-- one transaction (relay_save_event and relay_charge_claim, in cluster/store/functions/).

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
