"""Write policies as small functions `(event, now) -> Rejection | None`, built by factories.

The relay runs the list in order and answers with the first rejection (khatru's RejectEvent).
"""

from __future__ import annotations

from collections.abc import Callable

from cluster.config import LimitSettings
from cluster.nostr.event import Event
from cluster.nostr.kinds import AUTH
from cluster.nostr.rejection import Rejection, invalid

Policy = Callable[[Event, int], Rejection | None]


def max_tags(limit: int) -> Policy:
    def reject_too_many_tags(event: Event, now: int) -> Rejection | None:
        if len(event.tags) > limit:
            return invalid(f"too many tags ({len(event.tags)} > {limit})")
        return None

    return reject_too_many_tags


def max_content_length(limit: int) -> Policy:
    def reject_long_content(event: Event, now: int) -> Rejection | None:
        if len(event.content) > limit:
            return invalid(f"content longer than {limit} characters")
        return None

    return reject_long_content


def created_at_window(past: int, future: int) -> Policy:
    """`past` = 0 disables the lower bound (old events are welcome, e.g. for backfills)."""

    def reject_out_of_window(event: Event, now: int) -> Rejection | None:
        if event.created_at > now + future:
            return invalid(f"created_at is more than {future} seconds in the future")
        if past and event.created_at < now - past:
            return invalid(f"created_at is more than {past} seconds in the past")
        return None

    return reject_out_of_window


def reject_expired(event: Event, now: int) -> Rejection | None:
    """NIP-40: an event that has already expired is not accepted."""
    expiration = event.expiration
    if expiration is not None and expiration <= now:
        return invalid("event has expired")
    return None


def reject_auth_events(event: Event, now: int) -> Rejection | None:
    """NIP-42: kind 22242 is for the AUTH message only, never stored or broadcast."""
    if event.kind == AUTH:
        return invalid("kind 22242 is only accepted in an AUTH message")
    return None


def default_policies(limits: LimitSettings) -> list[Policy]:
    return [
        reject_auth_events,
        max_tags(limits.max_event_tags),
        max_content_length(limits.max_content_length),
        created_at_window(limits.created_at_past, limits.created_at_future),
        reject_expired,
    ]


def first_rejection(policies: list[Policy], event: Event, now: int) -> Rejection | None:
    for policy in policies:
        rejection = policy(event, now)
        if rejection is not None:
            return rejection
    return None
