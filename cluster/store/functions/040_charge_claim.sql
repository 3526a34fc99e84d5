-- Charge one verified claim exactly once, in the transaction that stores its event. Returns
-- 'charged', or 'stale_nonce' / 'insufficient_balance' (nothing charged; the caller then stores
-- nothing). The channel terms are those the payment gate verified the claim against.
CREATE OR REPLACE FUNCTION relay_charge_claim(
    p_event_id bytea, p_channel text, p_nonce bigint, p_amount bigint,
    p_blockchain text, p_sender_pubkey text, p_capacity bigint, p_expiration bigint,
    p_status text
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_nonce bigint;
BEGIN
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
    VALUES (p_channel, p_nonce, p_amount, p_event_id);
    INSERT INTO payment_outbox (channel_id, nonce, amount, event_id)
    VALUES (p_channel, p_nonce, p_amount, p_event_id);
    RETURN 'charged';
END
$$;
