"""NIP-13: leading zero bits (known answers from the NIP) and the committed target rule."""

from __future__ import annotations

import pytest

from cluster.nostr.event import Event
from cluster.nostr.pow import check_pow, committed_target, leading_zero_bits
from cluster.nostr.rejection import Prefix
from cluster.nostr.signing import Signer

NIP13_ID = "000000000e9d97a1ab09fc381030b346cdd7a142ad57e6df0b46dc9bef6c7e2d"


def event_with(event_id: str, tags: list[list[str]] | None = None) -> Event:
    """Shape only: check_pow looks at the id and tags, not at the signature."""
    return Event(
        id=event_id, pubkey="ab" * 32, created_at=0, kind=1, tags=tags or [], content="", sig=""
    )


@pytest.mark.parametrize(
    ("event_id", "bits"),
    [
        (NIP13_ID, 36),  # the NIP's own example
        ("f" * 64, 0),
        ("7" + "f" * 63, 1),
        ("3" + "f" * 63, 2),
        ("1" + "f" * 63, 3),
        ("0" + "f" * 63, 4),
        ("00" + "8" + "f" * 61, 8),
        ("000" + "1" + "f" * 60, 15),
        ("0" * 64, 256),
        ("", 0),
        ("0000" + "F" * 60, 16),
    ],
)
def test_leading_zero_bits(event_id: str, bits: int) -> None:
    assert leading_zero_bits(event_id) == bits


@pytest.mark.parametrize("event_id", ["0g", "00 1", "0\u0661"])
def test_leading_zero_bits_refuses_non_hex(event_id: str) -> None:
    with pytest.raises(ValueError):
        leading_zero_bits(event_id)


def test_zero_minimum_accepts_anything() -> None:
    assert check_pow(event_with("f" * 64), 0) is None


def test_enough_bits_without_a_nonce_tag() -> None:
    assert check_pow(event_with(NIP13_ID), 36) is None
    assert check_pow(event_with(NIP13_ID), 20) is None


def test_too_few_bits() -> None:
    rejection = check_pow(event_with(NIP13_ID), 37)
    assert rejection is not None
    assert rejection.prefix is Prefix.POW
    assert rejection.text == "pow: difficulty 36 is less than 37"


def test_committed_target_below_the_minimum_is_refused_even_with_lucky_id() -> None:
    event = event_with(NIP13_ID, [["nonce", "776797", "20"]])
    assert check_pow(event, 20) is None
    rejection = check_pow(event, 21)
    assert rejection is not None
    assert rejection.text == "pow: committed target difficulty 20 is less than 21"


def test_committed_target_above_what_was_achieved_counts_the_id() -> None:
    event = event_with(NIP13_ID, [["nonce", "1", "40"]])
    assert check_pow(event, 36) is None
    assert check_pow(event, 38) is not None


def test_nonce_without_target_counts_the_id() -> None:
    assert check_pow(event_with(NIP13_ID, [["nonce", "1"]]), 30) is None
    assert committed_target(event_with(NIP13_ID, [["nonce"]])) is None


@pytest.mark.parametrize("target", ["", "x", "-1", "1e3", "\u0661", "99999"])
def test_unreadable_target_is_refused(target: str) -> None:
    rejection = check_pow(event_with(NIP13_ID, [["nonce", "1", target]]), 10)
    assert rejection is not None and rejection.prefix is Prefix.POW


def test_first_nonce_tag_is_the_commitment() -> None:
    event = event_with(NIP13_ID, [["nonce", "1", "10"], ["nonce", "2", "30"]])
    assert committed_target(event) == 10


def test_malformed_id_is_refused_not_raised() -> None:
    rejection = check_pow(event_with("zz" * 32), 1)
    assert rejection is not None and rejection.prefix is Prefix.POW


def test_mined_event_passes() -> None:
    signer = Signer()
    nonce = 0
    while True:
        event = signer.sign(1, "mined", [["nonce", str(nonce), "8"]], created_at=1)
        if leading_zero_bits(event.id) >= 8:
            break
        nonce += 1
    assert check_pow(event, 8) is None
    assert check_pow(event, 9) is not None  # committed 8 < 9, whatever the id
