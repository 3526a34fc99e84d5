"""Event id and signature against vectors signed by rust-nostr, plus tag helpers."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from cluster.nostr.event import (
    Event,
    canonical_serialisation,
    compute_id,
    event_from_object,
    is_lower_hex,
    verify,
)
from cluster.nostr.kinds import KindClass, classify
from cluster.nostr.signing import Signer, public_key_of
from tests.vectors import load

EVENTS = load("events.json")


@pytest.mark.parametrize("raw", EVENTS["valid"], ids=lambda raw: raw["content"][:20])
def test_valid_vectors_verify(raw: dict[str, Any]) -> None:
    event = event_from_object(raw)
    assert compute_id(event) == raw["id"]
    assert verify(event) is None


def test_escaping_rules_are_nip01() -> None:
    event = event_from_object(EVENTS["valid"][2])
    serialised = canonical_serialisation(event)
    assert b"\\n" in serialised and b"\\b" in serialised and b"\\f" in serialised
    unicode = canonical_serialisation(event_from_object(EVENTS["valid"][4]))
    assert "日本語".encode() in unicode and "\u2028".encode() in unicode  # verbatim, not \\u


@pytest.mark.parametrize("raw", EVENTS["invalid_id"])
def test_tampered_content_fails_id_check(raw: dict[str, Any]) -> None:
    rejection = verify(event_from_object(raw))
    assert rejection is not None and rejection.text.startswith("invalid: event id")


@pytest.mark.parametrize("raw", EVENTS["invalid_sig"])
def test_foreign_signature_fails(raw: dict[str, Any]) -> None:
    rejection = verify(event_from_object(raw))
    assert rejection is not None and rejection.text == "invalid: signature does not verify"


def test_a_known_author_s_cached_key_still_checks_each_signature() -> None:
    """The parsed key is kept per author; each event's own signature is still verified."""
    author, other = Signer(), Signer()
    first, second = author.sign(1, "first"), author.sign(1, "second")
    assert verify(first) is None  # the author's key is now cached
    forged = msgspec.structs.replace(second, sig=other.sign(1, "second").sig)
    rejection = verify(forged)
    assert rejection is not None and rejection.text == "invalid: signature does not verify"
    swapped = msgspec.structs.replace(second, sig=first.sig)  # a valid sig of another id
    assert verify(swapped) is not None
    assert verify(second) is None


def test_signer_matches_vector_key() -> None:
    assert public_key_of(EVENTS["secret_key"]) == EVENTS["pubkey"]
    event = Signer(EVENTS["secret_key"]).sign(1, "x", [["t", "a"]], created_at=5)
    assert verify(event) is None and event.pubkey == EVENTS["pubkey"]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("id", "A" * 64, "id must be"),
        ("pubkey", "ab" * 31, "pubkey must be"),
        ("sig", "zz" * 64, "sig must be"),
        ("kind", 70000, "kind must be"),
        ("created_at", -1, "created_at must be"),
    ],
)
def test_shape_rejections(field: str, value: Any, reason: str) -> None:
    raw = dict(EVENTS["valid"][0])
    raw[field] = value
    rejection = verify(event_from_object(raw))
    assert rejection is not None and reason in rejection.message


def test_wrong_types_are_rejected_by_the_decoder() -> None:
    raw = dict(EVENTS["valid"][0], tags=[["t", 1]])
    with pytest.raises(msgspec.ValidationError):
        event_from_object(raw)


def test_hex_check_refuses_spaces_and_uppercase() -> None:
    assert is_lower_hex("ab" * 32, 64)
    assert not is_lower_hex("AB" * 32, 64)
    assert not is_lower_hex("ab " * 21 + "a", 64)
    assert not is_lower_hex("ab" * 31, 64)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (0, KindClass.REPLACEABLE),
        (1, KindClass.REGULAR),
        (3, KindClass.REPLACEABLE),
        (5, KindClass.REGULAR),
        (9999, KindClass.REGULAR),
        (10000, KindClass.REPLACEABLE),
        (19999, KindClass.REPLACEABLE),
        (20000, KindClass.EPHEMERAL),
        (29999, KindClass.EPHEMERAL),
        (30000, KindClass.ADDRESSABLE),
        (39999, KindClass.ADDRESSABLE),
        (40000, KindClass.REGULAR),
    ],
)
def test_kind_classes(kind: int, expected: KindClass) -> None:
    assert classify(kind) is expected


def test_addresses_and_expiration() -> None:
    signer = Signer()
    assert signer.sign(1).address is None
    assert signer.sign(0).address == f"0:{signer.pubkey}:"
    assert signer.sign(30023, tags=[["d", "post"]]).address == f"30023:{signer.pubkey}:post"
    assert signer.sign(30023).address == f"30023:{signer.pubkey}:"
    assert signer.sign(1, tags=[["expiration", "123"]]).expiration == 123
    assert signer.sign(1, tags=[["expiration", "soon"]]).expiration is None
    event = signer.sign(1, tags=[["e", "x"], ["title", "long"], ["p", "y", "relay"], ["t"]])
    assert event.indexed_tags() == ["e:x", "p:y"]


def test_events_round_trip_through_msgspec() -> None:
    event = Signer().sign(1, "hi")
    assert msgspec.json.decode(msgspec.json.encode(event), type=Event) == event


@pytest.mark.parametrize(
    ("value", "expected"),
    [("²", None), ("١٢٣", None), ("-5", None), ("9" * 30, 2**53 - 1), ("1700000000", 1700000000)],
)
def test_expiration_reads_only_ascii_digits_and_caps_huge_values(
    value: str, expected: int | None
) -> None:
    assert Signer().sign(1, tags=[["expiration", value]]).expiration == expected
