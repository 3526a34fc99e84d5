"""PaymentGate without services: a fixed price table and a scripted channel cache."""

from __future__ import annotations

import pytest

from cluster.nostr.event import Event
from cluster.nostr.rejection import Rejection
from cluster.payments.channels import ChannelLookup
from cluster.payments.claims import parse_payment_tag
from cluster.payments.gate import (
    UNAVAILABLE,
    PaidClaim,
    PaymentGate,
    charge_of,
    invalid_payment,
)
from cluster.payments.model import ChannelStatus, PaymentClaim, PaymentReason
from cluster.payments.pricing import PriceTable
from cluster.store.charges import Charge
from tests.unit.payments.fakes import NOW, PRICE, PRICED, FixedPricing, Payer, ScriptedChannels

TABLE = PriceTable(kinds={PRICED: PRICE, 20001: PRICE})


def gate(channels: ScriptedChannels, table: PriceTable = TABLE) -> PaymentGate:
    return PaymentGate(FixedPricing(table), channels, clock=lambda: NOW)


def cached(payer: Payer, **state: object) -> ChannelLookup:
    return ChannelLookup(payer.state(**state), from_cache=True)  # type: ignore[arg-type]


def fresh(payer: Payer, **state: object) -> ChannelLookup:
    return ChannelLookup(payer.state(**state), from_cache=False)  # type: ignore[arg-type]


def reason(answer: object) -> str:
    assert isinstance(answer, Rejection), answer
    return answer.text


async def test_free_and_ephemeral_kinds_need_no_claim_and_no_lookup() -> None:
    payer, channels = Payer(), ScriptedChannels()
    assert await gate(channels).check(payer.signer.sign(1, "free")) is None
    # 20001 is priced in the table but ephemeral: never stored, so never charged.
    assert await gate(channels).check(payer.signer.sign(20001, "ephemeral")) is None
    assert channels.calls == []


async def test_priced_kind_without_a_tag_says_the_price() -> None:
    channels = ScriptedChannels()
    answer = await gate(channels).check(Payer().signer.sign(PRICED, "unpaid"))
    assert reason(answer) == f"restricted: payment required: kind {PRICED} costs {PRICE} sats"
    assert channels.calls == []


@pytest.mark.parametrize("shape", ["two tags", "arity", "leading zero"])
async def test_malformed_tags(shape: str) -> None:
    payer, channels = Payer(), ScriptedChannels(cached=cached(Payer()))
    good = payer.event().tags[0]
    tags = {
        "two tags": [good, good],
        "arity": [good[:6]],
        "leading zero": [[*good[:3], "010", *good[4:]]],
    }[shape]
    answer = await gate(channels).check(payer.event(tags=tags))
    assert reason(answer) == "restricted: invalid payment: malformed_tag"
    assert channels.calls == []


async def test_insufficient_amount_is_refused_before_any_lookup() -> None:
    payer = Payer()
    channels = ScriptedChannels(cached=cached(payer))
    answer = await gate(channels).check(payer.event(amount=PRICE - 1))
    assert reason(answer) == "restricted: invalid payment: insufficient_amount"
    assert channels.calls == []


async def test_unknown_channel() -> None:
    channels = ScriptedChannels(cached=ChannelLookup(None, from_cache=False))
    answer = await gate(channels).check(Payer().event())
    assert reason(answer) == "restricted: invalid payment: unknown_channel"


async def test_node_unavailable_fails_closed() -> None:
    channels = ScriptedChannels(cached=None)
    answer = await gate(channels).check(Payer().event())
    assert answer == UNAVAILABLE
    assert reason(answer) == "error: payment verification unavailable, retry later"


async def test_accepted_claim_names_its_charge() -> None:
    payer = Payer()
    channels = ScriptedChannels(cached=cached(payer, capacity=500))
    answer = await gate(channels).check(payer.event(amount=12, nonce=3))
    assert answer == PaidClaim(
        Charge(
            channel_id="btc:test",
            nonce=3,
            amount=12,
            currency="BTC",
            sender_pubkey=payer.state().sender_pubkey,
            capacity=500,
            expiration=NOW + 3600,
            status="OPEN",
        ),
        from_cache=True,
    )
    assert channels.calls == [False]


async def test_the_gate_clock_decides_expiry() -> None:
    payer = Payer()
    channels = ScriptedChannels(cached=cached(payer, expiration=NOW))
    answer = await gate(channels).check(payer.event())
    assert reason(answer) == "restricted: invalid payment: channel_expired"


async def test_stale_cached_balance_is_refreshed_once_and_accepted() -> None:
    payer = Payer()
    channels = ScriptedChannels(
        cached=cached(payer, capacity=PRICE - 1), fresh=fresh(payer, capacity=100)
    )
    answer = await gate(channels).check(payer.event())
    assert isinstance(answer, PaidClaim)
    assert answer.charge.capacity == 100 and answer.from_cache is False
    assert channels.calls == [False, True]


async def test_stale_refresh_happens_once_even_when_the_refresh_is_cached_too() -> None:
    # The node is away, so the "fresh" lookup serves the stale copy again: no third lookup.
    payer = Payer()
    small = cached(payer, capacity=PRICE - 1)
    channels = ScriptedChannels(cached=small, fresh=small)
    answer = await gate(channels).check(payer.event())
    assert reason(answer) == "restricted: invalid payment: insufficient_balance"
    assert channels.calls == [False, True]


async def test_no_refresh_for_a_fresh_state_or_another_reason() -> None:
    payer = Payer()
    channels = ScriptedChannels(cached=fresh(payer, capacity=PRICE - 1))
    answer = await gate(channels).check(payer.event())
    assert reason(answer) == "restricted: invalid payment: insufficient_balance"
    assert channels.calls == [False]
    closed = ScriptedChannels(cached=cached(payer, status=ChannelStatus.CLOSED))
    answer = await gate(closed).check(payer.event())
    assert reason(answer) == "restricted: invalid payment: channel_closed"
    assert closed.calls == [False]


async def test_retry_if_stale_refreshes_a_cached_claim() -> None:
    payer = Payer()
    channels = ScriptedChannels(cached=cached(payer), fresh=fresh(payer, capacity=2000))
    event = payer.event()
    first = await gate(channels).check(event)
    assert isinstance(first, PaidClaim) and first.from_cache
    again = await gate(channels).retry_if_stale(event, first)
    assert isinstance(again, PaidClaim)
    assert again.charge == charge_of_state(first.charge, capacity=2000)
    assert again.from_cache is False
    assert channels.calls == [False, True]


async def test_retry_if_stale_refuses_a_claim_checked_on_a_fresh_state() -> None:
    payer = Payer()
    channels = ScriptedChannels(cached=fresh(payer))
    event = payer.event()
    first = await gate(channels).check(event)
    assert isinstance(first, PaidClaim) and not first.from_cache
    answer = await gate(channels).retry_if_stale(event, first)
    assert answer == invalid_payment(PaymentReason.INSUFFICIENT_BALANCE)
    assert reason(answer) == "restricted: invalid payment: insufficient_balance"
    assert channels.calls == [False]


async def test_retry_if_stale_answers_what_the_fresh_state_says() -> None:
    payer = Payer()
    event = payer.event()
    paid = PaidClaim(charge_of(event_claim(event), payer.state()), from_cache=True)
    short = ScriptedChannels(fresh=fresh(payer, capacity=PRICE - 1))
    assert reason(await gate(short).retry_if_stale(event, paid)) == (
        "restricted: invalid payment: insufficient_balance"
    )
    away = ScriptedChannels(fresh=None)
    assert await gate(away).retry_if_stale(event, paid) == UNAVAILABLE
    assert short.calls == away.calls == [True]


def charge_of_state(charge: Charge, *, capacity: int) -> Charge:
    return Charge(
        channel_id=charge.channel_id,
        nonce=charge.nonce,
        amount=charge.amount,
        currency=charge.currency,
        sender_pubkey=charge.sender_pubkey,
        capacity=capacity,
        expiration=charge.expiration,
        status=charge.status,
    )


def event_claim(event: Event) -> PaymentClaim:
    return parse_payment_tag(event.tags[0])


async def test_a_claim_copied_into_another_authors_event_is_not_bound() -> None:
    """Rule 7: a valid claim seen in someone's event cannot pay for a thief's event."""
    payer, thief = Payer(), Payer()
    channels = ScriptedChannels(cached=cached(payer))
    stolen = next(tag for tag in payer.event().tags if tag[0] == "payment")
    theft = thief.signer.sign(PRICED, "not mine", [stolen])
    assert (
        reason(await gate(channels).check(theft))
        == invalid_payment(PaymentReason.CLAIM_NOT_BOUND).text
    )
    # The sender itself still pays with the same claim.
    assert isinstance(await gate(channels).check(payer.event()), PaidClaim)


async def test_binding_off_lets_a_service_pay_for_other_authors() -> None:
    payer, author = Payer(), Payer()
    channels = ScriptedChannels(cached=cached(payer))
    tag = next(tag for tag in payer.event().tags if tag[0] == "payment")
    event = author.signer.sign(PRICED, "published for a user", [tag])
    unbound = PaymentGate(FixedPricing(TABLE), channels, clock=lambda: NOW, bind_claims=False)
    assert isinstance(await unbound.check(event), PaidClaim)


async def test_a_claim_not_signed_by_its_author_never_reaches_the_channel_cache() -> None:
    """Binding on: a garbage or foreign signature costs no lookup (and so no ledger RPC)."""
    payer, stranger = Payer(), Payer()
    channels = ScriptedChannels(cached=cached(payer))
    foreign = next(tag for tag in stranger.event().tags if tag[0] == "payment")
    event = payer.signer.sign(PRICED, "claim signed by someone else", [foreign])
    answer = await gate(channels).check(event)
    assert reason(answer) == invalid_payment(PaymentReason.CLAIM_NOT_BOUND).text
    assert channels.calls == []
