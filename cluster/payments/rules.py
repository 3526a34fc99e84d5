"""The acceptance rules of shared/PAYMENTS.md that need no database (pure).

Checks 4 (nonce) and 6 (capacity) are decided inside the PostgreSQL transaction that stores the
event (relay_save_event), where concurrent claims are serialised; everything else is here.
"""

from __future__ import annotations

from cluster.payments.claims import verify_claim_signature
from cluster.payments.model import ChannelState, ChannelStatus, PaymentClaim, PaymentReason


def check_claim(
    claim: PaymentClaim, channel: ChannelState, price: int, now: int
) -> PaymentReason | None:
    """The first rule the claim breaks, cheapest first (the signature check is the costliest)."""
    if claim.amount < price:
        return PaymentReason.INSUFFICIENT_AMOUNT
    if channel.status is ChannelStatus.CLOSED:
        return PaymentReason.CHANNEL_CLOSED
    if channel.status is ChannelStatus.EXPIRED or now >= channel.expiration:
        return PaymentReason.CHANNEL_EXPIRED
    if claim.currency != channel.blockchain:
        return PaymentReason.CURRENCY_MISMATCH
    if claim.amount > channel.capacity:
        return PaymentReason.INSUFFICIENT_BALANCE
    if not verify_claim_signature(claim, channel.sender_pubkey):
        return PaymentReason.INVALID_SIGNATURE
    return None
