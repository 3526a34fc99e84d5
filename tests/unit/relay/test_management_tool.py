"""`relay-cluster admin` (cluster/tools/admin.py): what it signs is what the relay verifies."""

from __future__ import annotations

import pytest

from cluster.nostr.nip98 import Refusal, verify_authorization
from cluster.nostr.signing import Signer
from cluster.tools.admin import http_url_of, signed_request

NOW = 1_700_000_000


@pytest.mark.parametrize(
    ("relay", "http"),
    [
        ("ws://127.0.0.1:8080", "http://127.0.0.1:8080/"),
        ("wss://relay.example.com/", "https://relay.example.com/"),
        ("wss://example.com/relay", "https://example.com/relay"),
        ("https://relay.example.com", "https://relay.example.com/"),
    ],
)
def test_http_url_of(relay: str, http: str) -> None:
    assert http_url_of(relay) == http


def test_http_url_of_refuses_other_schemes() -> None:
    with pytest.raises(ValueError):
        http_url_of("ftp://example.com")


def test_signed_request_verifies_as_the_relay_checks_it() -> None:
    admin = Signer()
    url, body, header = signed_request(
        "ws://127.0.0.1:8080", admin.secret, "banpubkey", ["ab" * 32, "spam"], now=NOW
    )
    assert url == "http://127.0.0.1:8080/"
    assert body == b'{"method":"banpubkey","params":["' + b"ab" * 32 + b'","spam"]}'
    signer = verify_authorization(header, "POST", url, body, NOW, require_payload=True)
    assert signer == admin.pubkey
    assert isinstance(verify_authorization(header, "POST", url, body + b" ", NOW), Refusal)
