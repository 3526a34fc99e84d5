"""The acceptance rules of docs/PAYMENTS.md that need no database, shared by the relay's gate
and the ledger node (pure).

Each rule is a small function `(claim, channel, price, now) -> PaymentReason | None`; a rule set
is an ordered tuple of them, and `first_broken` answers with the first reason. The two sets hold
the same rules in different orders and scopes:

- RELAY_RULES (the gate): cheapest first, the signature last; no nonce rule and capacity rather
  than balance, because checks 4 (nonce) and 6 (spent + amount <= capacity) are decided inside
  the PostgreSQL transaction that stores the event (relay_save_event), where concurrent claims
  are serialised. The price is the event's.
- NODE_RULES (`payment.verifyPaymentClaim`): the node's own view in docs/PAYMENTS.md order,
  nonce and remaining balance included; it knows no prices, so insufficient_amount never comes
  from it.
"""

from __future__ import annotations

from collections.abc import Callable

from cluster.payments.claims import verify_claim_signature
from cluster.payments.model import ChannelState, ChannelStatus, PaymentClaim, PaymentReason

Rule = Callable[[PaymentClaim, ChannelState, int, int], PaymentReason | None]


def covers_price(claim: PaymentClaim, price: int) -> PaymentReason | None:
    """The one rule that needs no channel: the gate applies it before looking the channel up."""
    return PaymentReason.INSUFFICIENT_AMOUNT if claim.amount < price else None


def bound_to_author(author_pubkey: str, sender_pubkey: str) -> bool:
    """Rule 7: the event's author (x-only, 64 hex) is the channel's sender (compressed, 66 hex),
    so a claim copied from someone else's refused or public event cannot be spent by another
    author (docs/PAYMENTS.md, "Claim binding")."""
    return len(sender_pubkey) == 66 and sender_pubkey[2:].lower() == author_pubkey


def overspends(amount: int, available: int) -> bool:
    """Would spending `amount` go past what the channel has left? (also the node's record rule)"""
    return amount > available


def amount_covers_price(
    claim: PaymentClaim, channel: ChannelState, price: int, now: int
) -> PaymentReason | None:
    return covers_price(claim, price)


def channel_open(
    claim: PaymentClaim, channel: ChannelState, price: int, now: int
) -> PaymentReason | None:
    return PaymentReason.CHANNEL_CLOSED if channel.status is ChannelStatus.CLOSED else None


def channel_unexpired(
    claim: PaymentClaim, channel: ChannelState, price: int, now: int
) -> PaymentReason | None:
    expired = channel.status is ChannelStatus.EXPIRED or now >= channel.expiration
    return PaymentReason.CHANNEL_EXPIRED if expired else None


def currency_matches(
    claim: PaymentClaim, channel: ChannelState, price: int, now: int
) -> PaymentReason | None:
    return PaymentReason.CURRENCY_MISMATCH if claim.currency != channel.blockchain else None


def within_capacity(
    claim: PaymentClaim, channel: ChannelState, price: int, now: int
) -> PaymentReason | None:
    """No claim can exceed the channel's whole capacity, whatever was spent before."""
    broken = overspends(claim.amount, channel.capacity)
    return PaymentReason.INSUFFICIENT_BALANCE if broken else None


def within_balance(
    claim: PaymentClaim, channel: ChannelState, price: int, now: int
) -> PaymentReason | None:
    broken = overspends(claim.amount, channel.balance)
    return PaymentReason.INSUFFICIENT_BALANCE if broken else None


def nonce_is_new(
    claim: PaymentClaim, channel: ChannelState, price: int, now: int
) -> PaymentReason | None:
    return PaymentReason.STALE_NONCE if claim.nonce <= channel.highest_nonce else None


def signed_by_sender(
    claim: PaymentClaim, channel: ChannelState, price: int, now: int
) -> PaymentReason | None:
    valid = verify_claim_signature(claim, channel.sender_pubkey)
    return None if valid else PaymentReason.INVALID_SIGNATURE


RELAY_RULES: tuple[Rule, ...] = (
    amount_covers_price,
    channel_open,
    channel_unexpired,
    currency_matches,
    within_capacity,
    signed_by_sender,  # the costliest: an ECDSA verification
)
NODE_RULES: tuple[Rule, ...] = (
    channel_open,
    channel_unexpired,
    currency_matches,
    signed_by_sender,
    nonce_is_new,
    within_balance,
)


def first_broken(
    rules: tuple[Rule, ...],
    claim: PaymentClaim,
    channel: ChannelState | None,
    price: int,
    now: int,
) -> PaymentReason | None:
    """The first rule the claim breaks (a channel nobody knows breaks them all); None: valid."""
    if channel is None:
        return PaymentReason.UNKNOWN_CHANNEL
    for rule in rules:
        reason = rule(claim, channel, price, now)
        if reason is not None:
            return reason
    return None


def check_claim(
    claim: PaymentClaim, channel: ChannelState | None, price: int, now: int
) -> PaymentReason | None:
    """The relay's verdict on a claim for an event of this price, against a channel state."""
    return first_broken(RELAY_RULES, claim, channel, price, now)


def node_verdict(
    claim: PaymentClaim, channel: ChannelState | None, now: int
) -> PaymentReason | None:
    """The node's verdict (`payment.verifyPaymentClaim`): no price, nonce and balance included."""
    return first_broken(NODE_RULES, claim, channel, 0, now)


def worth_refreshing(reason: PaymentReason | None, from_cache: bool) -> bool:
    """Refresh a cached channel state and try again? Only for insufficient balance seen on a
    cached state: the channel may have been topped up since. Every other reason stands on any
    state, and a fresh state's verdict is final. The gate asks this before the commit (its own
    verdict) and after it (the store's)."""
    return reason is PaymentReason.INSUFFICIENT_BALANCE and from_cache
