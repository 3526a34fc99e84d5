"""NIP-98 HTTP auth: check an `Authorization: Nostr <base64 event>` header (pure, no I/O).

The client signs a kind-27235 event naming the request's absolute URL (`u`), its method and,
with a body, the body's sha256 (`payload`), and sends it base64-encoded. A valid header proves
the request comes from the holder of `event.pubkey`'s secret key, for this URL and this body,
within a short window: a captured header is useless for another URL, body or (after the window)
the same one. NIP-86 management calls require the `payload` tag; the dashboard's login reuses
this check with a body-less GET.

Cheap checks run before the signature, so a flood of bogus headers costs no BIP-340 checks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from urllib.parse import urlsplit

import msgspec

from cluster.nostr.event import Event, encode_event, event_from_json, verify

HTTP_AUTH_KIND = 27235
WINDOW_SECONDS = 60
"""How far `created_at` may be from the server's clock (NIP-98 suggests 60 s)."""
SCHEME = "nostr"
MAX_HEADER_LENGTH = 16_384
"""A kind-27235 event with three tags is well under 1 KB; anything larger is not one."""
MAX_URL_LENGTH = 2048

# ws(s) is the relay's own URL (NIP-86: "the u tag is the relay URL") and http(s) the URL the
# request used: both spell the same resource, so each is compared as its HTTP equivalent.
_HTTP_SCHEME = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


class Refusal(msgspec.Struct, frozen=True):
    """Why a NIP-98 header does not authorise the request (answer HTTP 401 with `reason`)."""

    reason: str


def payload_hash(body: bytes) -> str:
    """The `payload` tag value NIP-98 expects for a request body: sha256, lowercase hex."""
    return hashlib.sha256(body).hexdigest()


def request_tags(url: str, method: str, body: bytes | None) -> list[list[str]]:
    """The tags a client signs for one request (`payload` only with a body)."""
    tags = [["u", url], ["method", method.upper()]]
    if body:
        tags.append(["payload", payload_hash(body)])
    return tags


def authorization_header(event: Event) -> str:
    """`Nostr <base64 event>`: the Authorization header value carrying a signed kind 27235."""
    return "Nostr " + base64.b64encode(encode_event(event)).decode()


def normalise_url(url: str) -> str | None:
    """`scheme://host:port/path?query` in one spelling, or None when not an absolute http(s)
    or ws(s) URL.

    Scheme and host compare case-insensitively, a default port equals no port, and an empty
    path is `/` (a client signing `https://relay.example.com` means the same request as the
    server's `https://relay.example.com/`). Anything else in the path and the query compares
    exactly, as NIP-98 asks; the fragment never reaches a server and is ignored.
    """
    if len(url) > MAX_URL_LENGTH or not url.isascii():
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = _HTTP_SCHEME.get(parts.scheme.lower())
    host = parts.hostname  # lower-cased, IPv6 brackets removed
    if scheme is None or not host or parts.username or parts.password:
        return None
    host = host.rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    effective_port = _DEFAULT_PORTS[scheme] if port is None else port
    path = parts.path or "/"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{host}:{effective_port}{path}{query}"


def decode_header(header: str) -> Event | Refusal:
    """The event inside `Nostr <base64>`, or why there is none (no I/O, no signature check)."""
    if not header:
        return Refusal("missing Authorization header (NIP-98: Nostr <base64 event>)")
    if len(header) > MAX_HEADER_LENGTH:
        return Refusal("Authorization header too large")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != SCHEME or not token.strip():
        return Refusal("Authorization scheme must be Nostr (NIP-98)")
    token = token.strip()
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
    except (binascii.Error, ValueError):
        try:  # some clients use the URL-safe alphabet
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return Refusal("Authorization token is not base64")
    try:
        return event_from_json(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return Refusal("Authorization token is not a Nostr event")


def _matches_url(tag_url: str, urls: Sequence[str]) -> bool:
    theirs = normalise_url(tag_url)
    return theirs is not None and any(normalise_url(url) == theirs for url in urls)


def check_event(
    event: Event,
    method: str,
    url: str | Sequence[str],
    body: bytes | None,
    now: int,
    *,
    require_payload: bool = False,
    window: int = WINDOW_SECONDS,
) -> str | Refusal:
    """The pubkey `event` authorises this request for, or why it does not.

    `url` is the absolute request URL, or every spelling of it this server answers to (e.g. the
    Host the client used and the configured public URL). With a non-empty `body`, a `payload`
    tag equal to its sha256 is required (NIP-98 makes it optional; accepting a body nobody
    signed would let a captured header carry any request); `require_payload` requires it for an
    empty body too (NIP-86).
    """
    if event.kind != HTTP_AUTH_KIND:
        return Refusal(f"NIP-98 event must be kind {HTTP_AUTH_KIND}")
    if abs(now - event.created_at) > window:
        return Refusal(f"NIP-98 event created_at must be within {window} seconds of now")
    tag_url = event.tag_value("u")
    if tag_url is None:
        return Refusal("NIP-98 event needs a u tag")
    urls = [url] if isinstance(url, str) else list(url)
    if not _matches_url(tag_url, urls):
        return Refusal("NIP-98 u tag does not match the request URL")
    tag_method = event.tag_value("method")
    if tag_method is None or tag_method.upper() != method.upper():
        return Refusal("NIP-98 method tag does not match the request method")
    payload = event.tag_value("payload")
    if body or require_payload or payload is not None:
        if payload is None:
            return Refusal("NIP-98 event needs a payload tag (sha256 of the request body)")
        if payload.lower() != payload_hash(body or b""):
            return Refusal("NIP-98 payload tag does not match the request body")
    rejection = verify(event)
    if rejection is not None:
        return Refusal(f"NIP-98 event: {rejection.message}")
    return event.pubkey


def verify_authorization(
    header: str,
    method: str,
    url: str | Sequence[str],
    body: bytes | None,
    now: int,
    *,
    require_payload: bool = False,
    window: int = WINDOW_SECONDS,
) -> str | Refusal:
    """Check a whole `Authorization` header value: the signer's pubkey, or a `Refusal`.

    The caller decides who may do what with the pubkey (e.g. `admin.pubkeys`); see
    `check_event` for `url`, `body` and `require_payload`.
    """
    event = decode_header(header)
    if isinstance(event, Refusal):
        return event
    return check_event(
        event, method, url, body, now, require_payload=require_payload, window=window
    )
