"""NIP-98: headers from nostr-tools and from our signer, and every reason one is refused."""

from __future__ import annotations

import base64
import json
import time

import msgspec
import pytest

from cluster.nostr.event import Event, encode_event
from cluster.nostr.nip98 import (
    HTTP_AUTH_KIND,
    WINDOW_SECONDS,
    Refusal,
    decode_header,
    normalise_url,
    payload_hash,
    verify_authorization,
)
from cluster.nostr.signing import Signer
from tests.nodejs import run_node

URL = "http://127.0.0.1:8080/"
BODY = b'{"method":"supportedmethods","params":[]}'
SIGNER = Signer()
NOW = 1_700_000_000

# One node run signs every header the interop tests need (nostr-tools' own getToken).
NOSTR_TOOLS_SCRIPT = """
import * as nip98 from './node_modules/nostr-tools/lib/esm/nip98.js'
import {finalizeEvent, generateSecretKey, getPublicKey}
  from './node_modules/nostr-tools/lib/esm/pure.js'
const sk = generateSecretKey()
const sign = (e) => finalizeEvent(e, sk)
const payload = {method: 'banpubkey', params: ['ab'.repeat(32), 'spam']}
const out = {
  pubkey: getPublicKey(sk),
  body: JSON.stringify(payload),
  get: await nip98.getToken('http://127.0.0.1:8080', 'get', sign, true),
  post: await nip98.getToken('http://127.0.0.1:8080/', 'POST', sign, true, payload),
  bare: await nip98.getToken('ws://127.0.0.1:8080', 'POST', sign, false, payload),
}
process.stdout.write(JSON.stringify(out))
"""


@pytest.fixture(scope="module")
def nostr_tools_tokens() -> dict[str, str]:
    tokens: dict[str, str] = json.loads(run_node(NOSTR_TOOLS_SCRIPT))
    return tokens


def header_of(event: Event) -> str:
    return "Nostr " + base64.b64encode(encode_event(event)).decode()


def auth_event(
    url: str = URL,
    method: str = "POST",
    body: bytes | None = BODY,
    created_at: int = NOW,
    kind: int = HTTP_AUTH_KIND,
    signer: Signer = SIGNER,
) -> Event:
    tags = [["u", url], ["method", method]]
    if body is not None:
        tags.append(["payload", payload_hash(body)])
    return signer.sign(kind, "", tags, created_at=created_at)


def check(header: str, **overrides: object) -> str | Refusal:
    arguments: dict[str, object] = {"method": "POST", "url": URL, "body": BODY, "now": NOW}
    arguments.update(overrides)
    return verify_authorization(header, **arguments)  # type: ignore[arg-type]


def test_nostr_tools_tokens_verify(nostr_tools_tokens: dict[str, str]) -> None:
    now = int(time.time())
    pubkey = nostr_tools_tokens["pubkey"]
    body = nostr_tools_tokens["body"].encode()
    assert verify_authorization(nostr_tools_tokens["get"], "GET", URL, None, now) == pubkey
    assert verify_authorization(nostr_tools_tokens["post"], "POST", URL, body, now) == pubkey
    # getToken without the scheme gives the bare base64: not an Authorization header
    assert isinstance(
        verify_authorization(nostr_tools_tokens["bare"], "POST", URL, body, now), Refusal
    )
    bare = "Nostr " + nostr_tools_tokens["bare"]
    assert verify_authorization(bare, "POST", URL, body, now, require_payload=True) == pubkey


def test_nostr_tools_token_refused_for_another_body(nostr_tools_tokens: dict[str, str]) -> None:
    refusal = verify_authorization(
        nostr_tools_tokens["post"], "POST", URL, b'{"method":"banevent"}', int(time.time())
    )
    assert isinstance(refusal, Refusal) and "payload" in refusal.reason


def test_own_signer_header_verifies() -> None:
    assert check(header_of(auth_event())) == SIGNER.pubkey


def test_get_without_body_needs_no_payload() -> None:
    event = auth_event(method="GET", body=None)
    assert check(header_of(event), method="GET", body=None) == SIGNER.pubkey
    refusal = check(header_of(event), method="GET", body=None, require_payload=True)
    assert isinstance(refusal, Refusal) and "payload" in refusal.reason


@pytest.mark.parametrize(
    ("event", "fragment"),
    [
        (auth_event(kind=22242), "kind"),
        (auth_event(created_at=NOW - WINDOW_SECONDS - 1), "created_at"),
        (auth_event(created_at=NOW + WINDOW_SECONDS + 1), "created_at"),
        (auth_event(url="http://127.0.0.1:8081/"), "u tag"),
        (auth_event(url="http://evil.example/"), "u tag"),
        (auth_event(url="http://127.0.0.1:8080/other"), "u tag"),
        (auth_event(url="http://127.0.0.1:8080/?x=1"), "u tag"),
        (auth_event(method="GET"), "method"),
        (auth_event(body=b"something else"), "payload"),
        (auth_event(body=None), "payload"),
    ],
)
def test_refusals(event: Event, fragment: str) -> None:
    refusal = check(header_of(event))
    assert isinstance(refusal, Refusal)
    assert fragment in refusal.reason


def test_event_without_u_or_method_tag() -> None:
    no_u = SIGNER.sign(HTTP_AUTH_KIND, "", [["method", "POST"]], created_at=NOW)
    no_method = SIGNER.sign(HTTP_AUTH_KIND, "", [["u", URL]], created_at=NOW)
    assert isinstance(check(header_of(no_u), body=None), Refusal)
    refusal = check(header_of(no_method), body=None)
    assert isinstance(refusal, Refusal) and "method" in refusal.reason


def test_tampered_signature_and_id_are_refused() -> None:
    event = auth_event()
    forged_sig = msgspec.structs.replace(event, sig=("0" * 127) + "1")
    assert "signature" in _reason(check(header_of(forged_sig)))
    other = Signer()
    forged_key = msgspec.structs.replace(event, pubkey=other.pubkey)
    assert "id" in _reason(check(header_of(forged_key)))


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer abc",
        "Nostr",
        "Nostr !!!not-base64!!!",
        "Nostr " + base64.b64encode(b"[1,2,3]").decode(),
        "Nostr " + base64.b64encode(b'{"kind":27235}').decode(),
        "Nostr " + "A" * 20_000,
    ],
)
def test_malformed_headers_are_refused(header: str) -> None:
    assert isinstance(check(header), Refusal)
    assert isinstance(decode_header(header), Refusal)


def test_scheme_is_case_insensitive_and_padding_optional() -> None:
    encoded = base64.b64encode(encode_event(auth_event())).decode().rstrip("=")
    assert check("nostr " + encoded) == SIGNER.pubkey


def test_url_spellings_that_name_the_same_request() -> None:
    for spelling in (
        "http://127.0.0.1:8080",
        "HTTP://127.0.0.1:8080/",
        "ws://127.0.0.1:8080",
    ):
        assert check(header_of(auth_event(url=spelling))) == SIGNER.pubkey, spelling
    # https and wss are the same as each other, not as http
    secure = auth_event(url="wss://relay.example.com")
    assert check(header_of(secure), url="https://Relay.Example.com:443/") == SIGNER.pubkey
    assert isinstance(check(header_of(secure), url="http://relay.example.com/"), Refusal)


def test_any_of_several_server_urls() -> None:
    event = auth_event(url="wss://relay.example.com/")
    urls = ["http://127.0.0.1:8080/", "wss://relay.example.com"]
    assert check(header_of(event), url=urls) == SIGNER.pubkey


def test_method_is_compared_case_insensitively() -> None:
    assert check(header_of(auth_event(method="post"))) == SIGNER.pubkey


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("https://example.com", "https://example.com:443/"),
        ("wss://example.com:443/a?b=c", "https://example.com:443/a?b=c"),
        ("http://[::1]:8080/", "http://[::1]:8080/"),
        ("ftp://example.com/", None),
        ("http://user:pw@example.com/", None),
        ("http://example.com:99999/", None),
        ("not a url", None),
        ("http://exämple.com/", None),
    ],
)
def test_normalise_url(url: str, normal: str | None) -> None:
    assert normalise_url(url) == normal


def _reason(result: str | Refusal) -> str:
    assert isinstance(result, Refusal)
    return result.reason
