"""NIP-42 authentication: per-connection challenges and the check of a kind-22242 event (pure).

The relay sends `["AUTH", <challenge>]`; the client answers `["AUTH", <signed event>]` whose
`challenge` tag repeats it and whose `relay` tag names this relay. An accepted event proves the
connection holds the secret key of `event.pubkey` (NIP-42 lets one connection prove several).
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from cluster.nostr.event import Event, verify
from cluster.nostr.rejection import Prefix, Rejection, invalid

AUTH_KIND = 22242
DEFAULT_WINDOW = 600
CHALLENGE_BYTES = 16
MAX_URL_LENGTH = 2048

_DEFAULT_PORTS = {"ws": 80, "wss": 443}


def new_challenge() -> str:
    """A fresh, unguessable challenge for one connection (128 random bits as hex)."""
    return secrets.token_hex(CHALLENGE_BYTES)


def auth_required(message: str) -> Rejection:
    """`auth-required:` — the client has not authenticated and must, for this request.

    When it has authenticated, but as a key not allowed to do this, answer `restricted:`.
    """
    return Rejection(Prefix.AUTH_REQUIRED, message)


def normalise_relay_url(url: str) -> str | None:
    """`scheme://host:port/path` in one canonical spelling, or None when not a ws(s) URL.

    Scheme and host compare case-insensitively, a default port equals no port, and a trailing
    slash is ignored (`wss://Relay.example.com:443/` is `wss://relay.example.com`). The path
    and query still count: two relays may share a host. ws:// and wss:// are different URLs.
    """
    if len(url) > MAX_URL_LENGTH or not url.isascii():
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname  # already lower-cased, IPv6 brackets removed
    if scheme not in _DEFAULT_PORTS or not host or parts.username or parts.password:
        return None
    host = host.rstrip(".")  # `relay.example.com.` is the same DNS name
    if ":" in host:
        host = f"[{host}]"
    effective_port = _DEFAULT_PORTS[scheme] if port is None else port
    path = parts.path.rstrip("/")
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{host}:{effective_port}{path}{query}"


def same_relay(tag_url: str, relay_url: str) -> bool:
    """True when two relay URLs name the same relay (see `normalise_relay_url`)."""
    ours = normalise_relay_url(relay_url)
    return ours is not None and normalise_relay_url(tag_url) == ours


def check_auth_event(
    event: Event,
    challenge: str,
    relay_url: str,
    now: int,
    window: int = DEFAULT_WINDOW,
) -> Rejection | None:
    """None when `event` authenticates its pubkey on this connection, else an `invalid:` reason.

    Cheap checks run first so a stream of bogus AUTH messages costs no signature verifications.
    """
    if event.kind != AUTH_KIND:
        return invalid(f"AUTH event must be kind {AUTH_KIND}")
    if not challenge:
        return invalid("no challenge was issued on this connection")
    if event.tag_value("challenge") != challenge:
        return invalid("AUTH challenge does not match the one this connection was sent")
    tag_url = event.tag_value("relay")
    if tag_url is None:
        return invalid("AUTH event needs a relay tag")
    if not same_relay(tag_url, relay_url):
        return invalid("AUTH relay tag does not name this relay")
    if abs(event.created_at - now) > window:
        return invalid(f"AUTH event created_at must be within {window} seconds of now")
    return verify(event)
