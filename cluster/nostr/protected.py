"""NIP-70 protected events: `["-"]` events are accepted only from their authenticated author."""

from __future__ import annotations

from cluster.nostr.event import Event
from cluster.nostr.rejection import Prefix, Rejection, restricted

PROTECTED_TAG = "-"
_MESSAGE = "this event may only be published by its author"


def is_protected(event: Event) -> bool:
    """True when any tag starts with `-` (NIP-70's tag is `["-"]`; extra items still protect)."""
    return any(tag and tag[0] == PROTECTED_TAG for tag in event.tags)


def check_protected(event: Event, authenticated_pubkeys: frozenset[str]) -> Rejection | None:
    """None when the event is unprotected or its author authenticated on this connection."""
    if not is_protected(event) or event.pubkey in authenticated_pubkeys:
        return None
    if not authenticated_pubkeys:
        return Rejection(Prefix.AUTH_REQUIRED, _MESSAGE)
    return restricted(_MESSAGE)
