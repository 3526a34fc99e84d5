"""NIP-42: challenges, relay URL matching and every reason an AUTH event is refused."""

from __future__ import annotations

import msgspec
import pytest

from cluster.nostr.auth import (
    AUTH_KIND,
    auth_required,
    check_auth_event,
    new_challenge,
    normalise_relay_url,
    same_relay,
)
from cluster.nostr.event import Event
from cluster.nostr.rejection import Prefix
from cluster.nostr.signing import Signer

NOW = 1_700_000_000
RELAY = "wss://relay.example.com"
SIGNER = Signer()


def auth_event(
    challenge: str = "c0ffee",
    relay: str | None = RELAY,
    created_at: int = NOW,
    kind: int = AUTH_KIND,
) -> Event:
    tags = [["challenge", challenge]]
    if relay is not None:
        tags.append(["relay", relay])
    return SIGNER.sign(kind, "", tags, created_at=created_at)


def test_challenges_are_fresh_and_unguessable() -> None:
    challenges = {new_challenge() for _ in range(100)}
    assert len(challenges) == 100
    assert all(len(challenge) == 32 for challenge in challenges)


def test_valid_auth_event_is_accepted() -> None:
    assert check_auth_event(auth_event(), "c0ffee", RELAY, NOW) is None


@pytest.mark.parametrize(
    "tag_url",
    [
        "wss://relay.example.com",
        "wss://relay.example.com/",
        "WSS://Relay.Example.COM",
        "wss://relay.example.com:443",
        "wss://relay.example.com:443/",
        "wss://relay.example.com.",
        " wss://relay.example.com ",
    ],
)
def test_relay_url_spellings_of_the_same_relay(tag_url: str) -> None:
    assert check_auth_event(auth_event(relay=tag_url), "c0ffee", RELAY, NOW) is None


@pytest.mark.parametrize(
    "tag_url",
    [
        "ws://relay.example.com",  # other scheme
        "wss://relay.example.com:8443",  # other port
        "wss://other.example.com",
        "wss://relay.example.com/sub",  # other path: could be another relay on the host
        "https://relay.example.com",
        "relay.example.com",
        "wss://",
        "wss://user:pw@relay.example.com",
        "wss://relay.example.com:99999",
        "wss://relay.exämple.com",
        "",
    ],
)
def test_other_relays_are_refused(tag_url: str) -> None:
    rejection = check_auth_event(auth_event(relay=tag_url), "c0ffee", RELAY, NOW)
    assert rejection is not None
    assert rejection.text == "invalid: AUTH relay tag does not name this relay"


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("ws://127.0.0.1:8008", "ws://127.0.0.1:8008/", True),
        ("ws://localhost", "ws://LOCALHOST:80", True),
        ("ws://[::1]:8008", "ws://[0:0::1]:8008", False),  # textual, not numeric, comparison
        ("ws://[::1]:8008", "WS://[::1]:8008/", True),
        ("wss://r.example/nostr", "wss://r.example/nostr/", True),
        ("wss://r.example/nostr", "wss://r.example/Nostr", False),
        ("wss://r.example/?a=1", "wss://r.example?a=1", True),
        ("wss://r.example", "ws://r.example:443", False),
    ],
)
def test_same_relay(a: str, b: str, same: bool) -> None:
    assert same_relay(a, b) is same
    assert same_relay(b, a) is same


def test_normalised_form() -> None:
    assert normalise_relay_url("WSS://Relay.Example.com/") == "wss://relay.example.com:443"
    assert normalise_relay_url("ws://[::1]:8008/x/") == "ws://[::1]:8008/x"
    assert normalise_relay_url("http://relay.example.com") is None
    assert normalise_relay_url("wss://" + "a" * 5000) is None


def test_a_misconfigured_relay_url_accepts_nothing() -> None:
    rejection = check_auth_event(auth_event(relay="not a url"), "c0ffee", "not a url", NOW)
    assert rejection is not None and rejection.prefix is Prefix.INVALID


def test_wrong_kind() -> None:
    rejection = check_auth_event(auth_event(kind=1), "c0ffee", RELAY, NOW)
    assert rejection is not None and rejection.text == "invalid: AUTH event must be kind 22242"


def test_wrong_challenge() -> None:
    rejection = check_auth_event(auth_event(challenge="other"), "c0ffee", RELAY, NOW)
    assert rejection is not None and "challenge does not match" in rejection.text


def test_no_challenge_issued_matches_nothing() -> None:
    rejection = check_auth_event(auth_event(challenge=""), "", RELAY, NOW)
    assert rejection is not None and rejection.prefix is Prefix.INVALID


def test_missing_challenge_tag() -> None:
    event = SIGNER.sign(AUTH_KIND, "", [["relay", RELAY]], created_at=NOW)
    rejection = check_auth_event(event, "c0ffee", RELAY, NOW)
    assert rejection is not None and "challenge does not match" in rejection.text


def test_missing_relay_tag() -> None:
    rejection = check_auth_event(auth_event(relay=None), "c0ffee", RELAY, NOW)
    assert rejection is not None and rejection.text == "invalid: AUTH event needs a relay tag"


@pytest.mark.parametrize(
    ("offset", "accepted"), [(-600, True), (600, True), (-601, False), (601, False)]
)
def test_created_at_window(offset: int, accepted: bool) -> None:
    rejection = check_auth_event(auth_event(created_at=NOW + offset), "c0ffee", RELAY, NOW)
    assert (rejection is None) is accepted
    if not accepted:
        assert rejection is not None and "within 600 seconds" in rejection.text


def test_custom_window() -> None:
    event = auth_event(created_at=NOW - 100)
    assert check_auth_event(event, "c0ffee", RELAY, NOW, window=100) is None
    assert check_auth_event(event, "c0ffee", RELAY, NOW, window=99) is not None


def test_forged_signature_is_refused() -> None:
    forged = msgspec.structs.replace(auth_event(), sig=Signer().sign(1).sig)
    rejection = check_auth_event(forged, "c0ffee", RELAY, NOW)
    assert rejection is not None and rejection.text == "invalid: signature does not verify"


def test_tampered_tags_fail_the_id_check() -> None:
    event = auth_event(challenge="old")
    tampered = msgspec.structs.replace(event, tags=[["challenge", "new"], ["relay", RELAY]])
    rejection = check_auth_event(tampered, "new", RELAY, NOW)
    assert rejection is not None and rejection.text.startswith("invalid: event id")


def test_malformed_fields_are_refused() -> None:
    bad = msgspec.structs.replace(auth_event(), pubkey="XYZ")
    rejection = check_auth_event(bad, "c0ffee", RELAY, NOW)
    assert rejection is not None and rejection.prefix is Prefix.INVALID


def test_auth_required_prefix() -> None:
    assert auth_required("log in first").text == "auth-required: log in first"
