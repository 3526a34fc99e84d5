"""NIP-70: protected events are accepted only from their authenticated author."""

from __future__ import annotations

from cluster.nostr.protected import check_protected, is_protected
from cluster.nostr.signing import Signer

AUTHOR = Signer()
OTHER = Signer()
MESSAGE = "this event may only be published by its author"


def test_detects_the_dash_tag() -> None:
    assert is_protected(AUTHOR.sign(1, "x", [["-"]]))
    assert is_protected(AUTHOR.sign(1, "x", [["p", "ab" * 32], ["-"]]))
    assert is_protected(AUTHOR.sign(1, "x", [["-", "extra"]]))
    assert not is_protected(AUTHOR.sign(1, "x", []))
    assert not is_protected(AUTHOR.sign(1, "x", [[], ["t", "-"], ["--"]]))


def test_unprotected_events_need_nothing() -> None:
    assert check_protected(AUTHOR.sign(1, "x"), frozenset()) is None


def test_protected_event_without_auth() -> None:
    rejection = check_protected(AUTHOR.sign(1, "x", [["-"]]), frozenset())
    assert rejection is not None and rejection.text == f"auth-required: {MESSAGE}"


def test_protected_event_authenticated_as_someone_else() -> None:
    rejection = check_protected(AUTHOR.sign(1, "x", [["-"]]), frozenset({OTHER.pubkey}))
    assert rejection is not None and rejection.text == f"restricted: {MESSAGE}"


def test_protected_event_from_its_author() -> None:
    event = AUTHOR.sign(1, "x", [["-"]])
    assert check_protected(event, frozenset({AUTHOR.pubkey})) is None
    assert check_protected(event, frozenset({OTHER.pubkey, AUTHOR.pubkey})) is None
