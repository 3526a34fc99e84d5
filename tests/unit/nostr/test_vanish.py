"""NIP-62: which kind-62 requests name this relay."""

from __future__ import annotations

from cluster.nostr.rejection import Rejection
from cluster.nostr.signing import Signer
from cluster.nostr.vanish import ALL_RELAYS, VANISH_KIND, targets_this_relay

OURS = ["wss://relay.example.com", "ws://127.0.0.1:8080"]


def request(*relays: str) -> object:
    return targets_this_relay(
        Signer().sign(VANISH_KIND, "bye", tags=[["relay", url] for url in relays]), OURS
    )


def test_a_request_naming_this_relay_in_any_spelling_is_for_us() -> None:
    assert request("wss://relay.example.com") is True
    assert request("wss://RELAY.example.com/") is True  # host case and a trailing slash
    assert request("ws://relay.example.com:443") is True  # ws/wss: the TLS ends in front of us
    assert request("wss://other.example", "ws://127.0.0.1:8080/") is True
    assert request(ALL_RELAYS) is True


def test_a_request_for_other_relays_is_not() -> None:
    assert request("wss://other.example") is False
    assert request("wss://relay.example.com/sub") is False  # another path
    assert request("ws://127.0.0.1:8081") is False  # another port
    assert request("not a url", "https://") is False


def test_a_request_naming_no_relay_is_invalid() -> None:
    refused = targets_this_relay(Signer().sign(VANISH_KIND, "bye"), OURS)
    assert isinstance(refused, Rejection) and refused.text.startswith("invalid:")
