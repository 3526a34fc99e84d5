"""The claim rules shared by the gate and the ledger node, from a table of cases (pure)."""

from __future__ import annotations

import pytest

from cluster.payments.claims import claim_of, parse_payment_tag, sign_claim
from cluster.payments.model import ChannelStatus, Currency, PaymentClaim
from cluster.payments.model import PaymentReason as R
from cluster.payments.rules import (
    NODE_RULES,
    RELAY_RULES,
    check_claim,
    first_broken,
    node_verdict,
    worth_refreshing,
)
from tests.unit.payments.fakes import NOW, Payer

PAYER, STRANGER = Payer(), Payer()


def claim(
    amount: int = 10, nonce: int = 5, *, key: Payer = PAYER, currency: str = "BTC"
) -> PaymentClaim:
    return parse_payment_tag(key.event(amount, nonce, currency=currency).tags[0])


# (name, claim, state changes, price, relay verdict, node verdict)
CASES = [
    ("valid", claim(), {}, 10, None, None),
    ("under price", claim(9), {}, 10, R.INSUFFICIENT_AMOUNT, None),
    ("closed", claim(), {"status": ChannelStatus.CLOSED}, 10, R.CHANNEL_CLOSED, R.CHANNEL_CLOSED),
    ("expired status", claim(), {"status": ChannelStatus.EXPIRED}, 10, R.CHANNEL_EXPIRED,
     R.CHANNEL_EXPIRED),
    ("expired now", claim(), {"expiration": NOW}, 10, R.CHANNEL_EXPIRED, R.CHANNEL_EXPIRED),
    ("currency", claim(currency="AKT"), {}, 10, R.CURRENCY_MISMATCH, R.CURRENCY_MISMATCH),
    ("over capacity", claim(11), {"capacity": 10}, 10, R.INSUFFICIENT_BALANCE,
     R.INSUFFICIENT_BALANCE),
    # The relay leaves balance and nonce to its database transaction; the node checks both.
    ("over balance", claim(), {"capacity": 100, "balance": 9}, 10, None, R.INSUFFICIENT_BALANCE),
    ("stale nonce", claim(nonce=5), {"highest_nonce": 5}, 10, None, R.STALE_NONCE),
    ("forged", claim(key=STRANGER), {}, 10, R.INVALID_SIGNATURE, R.INVALID_SIGNATURE),
    # Order: the relay checks capacity before the (costly) signature, the node the other way.
    ("forged and too big", claim(11, key=STRANGER), {"capacity": 10}, 10,
     R.INSUFFICIENT_BALANCE, R.INVALID_SIGNATURE),
    ("closed and under price", claim(1), {"status": ChannelStatus.CLOSED}, 10,
     R.INSUFFICIENT_AMOUNT, R.CHANNEL_CLOSED),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "the_claim", "changes", "price", "relay", "node"), CASES, ids=[c[0] for c in CASES]
)
def test_relay_and_node_verdicts(
    name: str,
    the_claim: PaymentClaim,
    changes: dict[str, object],
    price: int,
    relay: R | None,
    node: R | None,
) -> None:
    state = PAYER.state(**changes)  # type: ignore[arg-type]
    assert check_claim(the_claim, state, price, NOW) is relay
    assert node_verdict(the_claim, state, NOW) is node


def test_an_unknown_channel_breaks_every_rule_set() -> None:
    for rules in (RELAY_RULES, NODE_RULES):
        assert first_broken(rules, claim(), None, 0, NOW) is R.UNKNOWN_CHANNEL


def test_only_insufficient_balance_on_a_cached_state_is_worth_refreshing() -> None:
    assert worth_refreshing(R.INSUFFICIENT_BALANCE, from_cache=True)
    assert not worth_refreshing(R.INSUFFICIENT_BALANCE, from_cache=False)
    assert not worth_refreshing(R.STALE_NONCE, from_cache=True)
    assert not worth_refreshing(None, from_cache=True)


def test_claim_of_fields_verifies_like_the_parsed_tag() -> None:
    signature = sign_claim(PAYER.secret, "btc:test", 10, 5)
    built = claim_of("btc:test", 10, 5, signature + "01", Currency.BTC)
    assert built == claim()
    assert node_verdict(built, PAYER.state(), NOW) is None
