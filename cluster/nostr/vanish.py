"""NIP-62 request to vanish: which kind-62 events ask THIS relay to delete an author's events.

A request names relays in `relay` tags, or every relay with `ALL_RELAYS`. One that names this
relay deletes everything its author published up to its created_at (cluster/store/vanish.py);
one that names only other relays is an ordinary regular event here. URLs are compared by host,
port and path (scheme ws/wss and a trailing slash do not matter: TLS usually ends in front of
the relay, which then cannot tell which scheme the client used).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from cluster.nostr.event import Event
from cluster.nostr.rejection import Rejection, invalid

VANISH_KIND = 62
ALL_RELAYS = "ALL_RELAYS"
DEFAULT_PORTS = {"ws": 80, "http": 80, "wss": 443, "https": 443}


def _place(url: str) -> tuple[str, int, str] | None:
    """(host, port, path) of a relay URL; None when it is not one."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in DEFAULT_PORTS or not parts.hostname:
        return None
    return (
        parts.hostname.lower(),
        port or DEFAULT_PORTS[parts.scheme.lower()],
        parts.path.rstrip("/"),
    )


def relay_tags(event: Event) -> list[str]:
    return [tag[1] for tag in event.tags if len(tag) >= 2 and tag[0] == "relay"]


def targets_this_relay(event: Event, our_urls: Iterable[str]) -> bool | Rejection:
    """For a kind-62 event: True when it names this relay (one of `our_urls`) or ALL_RELAYS,
    False when it names only others, a refusal when it names none (NIP-62: at least one)."""
    named = relay_tags(event)
    if not named:
        return invalid("a request to vanish (kind 62) must name at least one relay")
    if ALL_RELAYS in named:
        return True
    ours = {place for url in our_urls if (place := _place(url)) is not None}
    return any(_place(url) in ours for url in named)
