"""The payment gate in front of the store: price the event, verify its claim, name the charge.

The gate hands the store a neutral `Charge` (cluster/store/charges.py), never payment types. It
alone decides when a stale channel state is refreshed for another try, by one rule
(`worth_refreshing` in cluster/payments/rules.py): before the commit on its own verdict
(`check`), after it on the store's (`retry_if_stale`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import msgspec

from cluster.nostr.event import Event
from cluster.nostr.rejection import Rejection, error, restricted
from cluster.payments.channels import ChannelLookup, PaymentUnavailable
from cluster.payments.claims import (
    MalformedTag,
    find_payment_tags,
    parse_payment_tag,
    signed_by_author,
)
from cluster.payments.model import ChannelState, PaymentClaim, PaymentReason
from cluster.payments.pricing import PriceTable
from cluster.payments.rules import bound_to_author, check_claim, covers_price, worth_refreshing
from cluster.store.charges import Charge

UNAVAILABLE = error("payment verification unavailable, retry later")


def invalid_payment(reason: PaymentReason) -> Rejection:
    return restricted(f"invalid payment: {reason}")


def charge_of(claim: PaymentClaim, state: ChannelState) -> Charge:
    """What the store charges: the verified claim, with the channel terms it was checked against."""
    return Charge(
        channel_id=claim.channel_id,
        nonce=claim.nonce,
        amount=claim.amount,
        currency=str(state.blockchain),
        sender_pubkey=state.sender_pubkey,
        capacity=state.capacity,
        expiration=state.expiration,
        status=str(state.status),
    )


class PaidClaim(msgspec.Struct, frozen=True):
    charge: Charge
    from_cache: bool  # checked against a cached state (which may predate a top-up)


class PriceSource(Protocol):
    """The worker's current price table (`Pricing`; a fixed table in unit tests)."""

    async def current(self) -> PriceTable: ...


class ChannelStates(Protocol):
    """Channel states, cached or fresh (`ChannelStateCache`; a fake in unit tests)."""

    async def get(self, channel_id: str, *, fresh: bool = False) -> ChannelLookup: ...


def claim_in(event: Event, price: int) -> PaymentClaim | Rejection:
    """The one payment claim a priced event carries, or why its tags cannot pay."""
    tags = find_payment_tags(event.tags)
    if not tags:
        return restricted(f"payment required: kind {event.kind} costs {price} sats")
    if len(tags) > 1:
        return invalid_payment(PaymentReason.MALFORMED_TAG)
    try:
        return parse_payment_tag(tags[0])
    except MalformedTag:
        return invalid_payment(PaymentReason.MALFORMED_TAG)


class PaymentGate:
    def __init__(
        self,
        pricing: PriceSource,
        channels: ChannelStates,
        clock: Callable[[], float] = time.time,
        *,
        bind_claims: bool = True,
    ) -> None:
        self.pricing = pricing
        self.channels = channels
        self._clock = clock
        self._bind_claims = bind_claims

    async def check(self, event: Event) -> PaidClaim | Rejection | None:
        """None for a free event; the claim to charge; or why the event is refused.

        A cached state that says insufficient balance is refreshed from the node once first.
        """
        if event.is_ephemeral:
            return None  # never stored, so never charged (docs/PAYMENTS.md)
        price = (await self.pricing.current()).price_of(event)
        if price == 0:
            return None
        claim = claim_in(event, price)
        if isinstance(claim, Rejection):
            return claim
        if (reason := covers_price(claim, price)) is not None:
            return invalid_payment(reason)  # no channel lookup for a claim that cannot pass
        if self._bind_claims and not signed_by_author(claim, event.pubkey):
            # A bound claim is signed by the author's own key (the channel's sender): one that
            # is not cannot pass rule 7, and must not make the relay ask the node about a
            # channel (or fill the cache) first: unsigned claims cost no RPC.
            return invalid_payment(PaymentReason.CLAIM_NOT_BOUND)
        verdict = await self._verify(claim, price, fresh=False)
        if isinstance(verdict, _Refused) and worth_refreshing(verdict.reason, verdict.from_cache):
            verdict = await self._verify(claim, price, fresh=True)
        return self._bound(event, verdict.answer())

    async def retry_if_stale(self, event: Event, paid: PaidClaim) -> PaidClaim | Rejection:
        """The store refused `paid.charge` for insufficient balance: a fresh PaidClaim to try
        once more when `paid` came from a cached state (a top-up may not be seen yet), else the
        insufficient_balance refusal.

        The price is read again; should it have dropped to zero meanwhile, the claim the event
        carries is still what it spends (it was about to be charged).
        """
        if not worth_refreshing(PaymentReason.INSUFFICIENT_BALANCE, paid.from_cache):
            return invalid_payment(PaymentReason.INSUFFICIENT_BALANCE)
        price = (await self.pricing.current()).price_of(event)
        claim = claim_in(event, price)
        if isinstance(claim, Rejection):
            return claim  # not reached: the same tag parsed for the first try
        return self._bound(event, (await self._verify(claim, price, fresh=True)).answer())

    def _bound(self, event: Event, answer: PaidClaim | Rejection) -> PaidClaim | Rejection:
        """Rule 7, last as in docs/PAYMENTS.md: with binding on (the default), only the
        channel's sender may spend its claims."""
        if (
            isinstance(answer, PaidClaim)
            and self._bind_claims
            and not bound_to_author(event.pubkey, answer.charge.sender_pubkey)
        ):
            return invalid_payment(PaymentReason.CLAIM_NOT_BOUND)
        return answer

    async def _verify(
        self, claim: PaymentClaim, price: int, *, fresh: bool
    ) -> _Accepted | _Refused | _Unavailable:
        """The claim checked against the channel's state (cached unless fresh)."""
        try:
            lookup = await self.channels.get(claim.channel_id, fresh=fresh)
        except PaymentUnavailable:
            return _Unavailable()
        reason = check_claim(claim, lookup.state, price, int(self._clock()))
        if reason is not None or lookup.state is None:
            return _Refused(reason or PaymentReason.UNKNOWN_CHANNEL, lookup.from_cache)
        return _Accepted(PaidClaim(charge_of(claim, lookup.state), lookup.from_cache))


class _Accepted(msgspec.Struct, frozen=True):
    paid: PaidClaim

    def answer(self) -> PaidClaim:
        return self.paid


class _Refused(msgspec.Struct, frozen=True):
    reason: PaymentReason
    from_cache: bool

    def answer(self) -> Rejection:
        return invalid_payment(self.reason)


class _Unavailable(msgspec.Struct, frozen=True):
    """No usable channel state: fail closed."""

    def answer(self) -> Rejection:
        return UNAVAILABLE
