"""The payment gate in front of the store: price the event, then verify its claim."""

from __future__ import annotations

import time

import msgspec

from cluster.nostr.event import Event
from cluster.nostr.rejection import Rejection, error, restricted
from cluster.payments.channels import ChannelStateCache, PaymentUnavailable
from cluster.payments.claims import MalformedTag, find_payment_tags, parse_payment_tag
from cluster.payments.model import PaymentReason
from cluster.payments.pricing import Pricing
from cluster.payments.rules import check_claim
from cluster.store.events import PaymentRecord

UNAVAILABLE = error("payment verification unavailable, retry later")


def invalid_payment(reason: PaymentReason) -> Rejection:
    return restricted(f"invalid payment: {reason}")


class PaidClaim(msgspec.Struct, frozen=True):
    record: PaymentRecord
    from_cache: bool


class PaymentGate:
    def __init__(self, pricing: Pricing, channels: ChannelStateCache) -> None:
        self.pricing = pricing
        self.channels = channels

    async def check(self, event: Event, *, fresh: bool = False) -> PaidClaim | Rejection | None:
        """None for a free event; the claim to charge; or why the event is refused."""
        if event.is_ephemeral:
            return None  # never stored, so never charged (docs/PAYMENTS.md)
        table = await self.pricing.current()
        price = table.price_of(event)
        if price == 0:
            return None
        tags = find_payment_tags(event.tags)
        if not tags:
            return restricted(f"payment required: kind {event.kind} costs {price} sats")
        if len(tags) > 1:
            return invalid_payment(PaymentReason.MALFORMED_TAG)
        try:
            claim = parse_payment_tag(tags[0])
        except MalformedTag:
            return invalid_payment(PaymentReason.MALFORMED_TAG)
        if claim.amount < price:
            return invalid_payment(PaymentReason.INSUFFICIENT_AMOUNT)
        try:
            lookup = await self.channels.get(claim.channel_id, fresh=fresh)
        except PaymentUnavailable:
            return UNAVAILABLE
        if lookup.state is None:
            return invalid_payment(PaymentReason.UNKNOWN_CHANNEL)
        reason = check_claim(claim, lookup.state, price, int(time.time()))
        if reason is PaymentReason.INSUFFICIENT_BALANCE and lookup.from_cache and not fresh:
            return await self.check(event, fresh=True)  # the channel may have been topped up
        if reason is not None:
            return invalid_payment(reason)
        return PaidClaim(PaymentRecord(claim, lookup.state), lookup.from_cache)
