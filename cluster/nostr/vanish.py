"""NIP-62 request to vanish: which kind-62 events ask THIS relay to delete an author's events.

A request names relays in `relay` tags, or every relay with `ALL_RELAYS`. One that names this
relay deletes everything its author published up to its created_at (cluster/store/vanish.py);
one that names only other relays is an ordinary regular event here. URLs are compared by host,
port and path (scheme ws/wss and a trailing slash do not matter: TLS usually ends in front of
the relay, which then cannot tell which scheme the client used).
"""

from __future__ import annotations

from collections.abc import Iterable

from cluster.nostr.auth import normalise_relay_url
from cluster.nostr.event import Event
from cluster.nostr.rejection import Rejection, invalid

VANISH_KIND = 62
ALL_RELAYS = "ALL_RELAYS"


def _place(url: str) -> str | None:
    """host:port/path of a relay URL (NIP-42's spelling, cluster/nostr/auth.py), without its
    scheme; None when it is not a relay URL."""
    normalised = normalise_relay_url(url)
    return None if normalised is None else normalised.split("://", 1)[1]


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
