"""PriceTable: configured prices, operator overrides, content size, NIP-11 fees (pure)."""

from __future__ import annotations

import pytest

from cluster.config import PricingSettings
from cluster.nostr.signing import Signer
from cluster.payments.pricing import PriceTable

SIGNER = Signer()


def table(**settings: object) -> PriceTable:
    return PriceTable.from_settings(PricingSettings(**settings))  # type: ignore[arg-type]


def test_base_prices_from_settings_with_a_default() -> None:
    prices = table(kinds={"1": 10, "30023": 100}, default=3)
    assert prices.base_price(1) == 10
    assert prices.base_price(30023) == 100
    assert prices.base_price(7) == 3


def test_overrides_replace_and_add_and_can_make_a_kind_free() -> None:
    prices = PriceTable.from_settings(
        PricingSettings(kinds={"1": 10, "4000": 5}), overrides={1: 0, 4000: 7, 9: 2}
    )
    assert (prices.base_price(1), prices.base_price(4000), prices.base_price(9)) == (0, 7, 2)
    assert prices.base_price(2) == 0


@pytest.mark.parametrize(
    ("kind", "kind_class"),
    [(1, "regular"), (0, "replaceable"), (10002, "replaceable"), (20001, "ephemeral"),
     (30023, "addressable")],
)  # fmt: skip
def test_price_of_every_kind_class(kind: int, kind_class: str) -> None:
    # The table prices by kind number alone; skipping ephemeral events is the gate's business.
    prices = PriceTable(kinds={kind: 4}, per_kib=2)
    assert prices.price_of(SIGNER.sign(kind, "")) == 4, kind_class
    assert prices.price_of(SIGNER.sign(kind, "x")) == 4 + 2, kind_class
    assert PriceTable(kinds={}).price_of(SIGNER.sign(kind, "x" * 5000)) == 0


def test_per_kib_counts_started_kib_of_utf8_content_for_priced_kinds_only() -> None:
    prices = PriceTable(kinds={1: 10}, per_kib=3)
    assert prices.price_of(SIGNER.sign(1, "x" * 1024)) == 10 + 3
    assert prices.price_of(SIGNER.sign(1, "x" * 1025)) == 10 + 6
    assert prices.price_of(SIGNER.sign(1, "é" * 513)) == 10 + 6  # 1026 bytes
    assert prices.price_of(SIGNER.sign(2, "x" * 5000)) == 0  # free kinds stay free


def test_requires_payment() -> None:
    assert not PriceTable(kinds={}).requires_payment
    assert not PriceTable(kinds={1: 0}).requires_payment
    assert PriceTable(kinds={1: 1}).requires_payment
    assert PriceTable(kinds={}, default=1).requires_payment


def test_publication_fees_group_kinds_by_price_and_list_the_default_last() -> None:
    prices = PriceTable(kinds={30023: 100, 1: 10, 7: 10, 3: 0}, default=2)
    assert prices.publication_fees() == [
        {"amount": 10, "unit": "sats", "kinds": [1, 7]},
        {"amount": 100, "unit": "sats", "kinds": [30023]},
        {"amount": 2, "unit": "sats"},
    ]
    assert PriceTable(kinds={1: 0}).publication_fees() == []
