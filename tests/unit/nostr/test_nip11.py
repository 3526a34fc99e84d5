"""NIP-11 from the settings and the fee list it is given (pure: no payments, no I/O)."""

from __future__ import annotations

from cluster.config import Settings, load_settings
from cluster.nostr.nip11 import information_document


def test_free_relay_has_no_fees_and_no_payment_restriction() -> None:
    document = information_document(Settings())
    assert "fees" not in document
    assert document["limitation"]["payment_required"] is False
    assert document["limitation"]["restricted_writes"] is False
    assert 1 in document["supported_nips"] and 11 in document["supported_nips"]


def test_fee_list_is_published_and_restricts_writes() -> None:
    fees: list[dict[str, object]] = [{"amount": 10, "unit": "sats", "kinds": [1]}]
    document = information_document(Settings(), fees)
    assert document["fees"] == {"publication": fees}
    assert document["limitation"]["payment_required"] is True
    assert document["limitation"]["restricted_writes"] is True


def test_an_empty_fee_list_means_free() -> None:
    assert "fees" not in information_document(Settings(), [])


def test_limits_come_from_the_settings() -> None:
    settings = load_settings(None, env={"RELAY_LIMITS__MAX_LIMIT": "1321", "RELAY_INFO__NAME": "x"})
    document = information_document(settings)
    assert document["limitation"]["max_limit"] == 1321
    assert document["name"] == "x"
