-- Claims the Dassie node refused for good (a definitive error answer such as unknown_channel,
-- insufficient_balance or nonce_conflict, not a transport failure or internal_error) leave
-- payment_outbox for this table instead of being retried forever (cluster/payments/outbox.py).
-- An operator reads them here, fixes the cause, and may move a row back to payment_outbox.
CREATE TABLE payment_outbox_dead (
    id          bigint PRIMARY KEY,                -- the row's id in payment_outbox
    channel_id  text    NOT NULL,
    nonce       bigint  NOT NULL,
    amount      bigint  NOT NULL,
    event_id    bytea   NOT NULL,
    attempts    integer NOT NULL,                  -- including the refused one
    created_at  timestamptz NOT NULL,              -- when the claim was accepted
    error       text    NOT NULL,                  -- the node's answer
    dead_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (channel_id, nonce)
);
