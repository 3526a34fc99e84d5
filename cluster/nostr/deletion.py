"""NIP-09 deletion requests: which ids and addresses a kind-5 event may delete (pure)."""

from __future__ import annotations

from cluster.nostr.event import Event, is_lower_hex
from cluster.nostr.kinds import KindClass, classify


def deletion_targets(event: Event) -> tuple[list[str], list[str]]:
    """(event ids, addresses) named by `e` and `a` tags, sorted so locks are taken in one order.

    Addresses of other authors are dropped: NIP-09 lets an author delete only their own events.
    Ids cannot be checked here (we do not know their author); the store deletes only the rows
    whose pubkey matches the requester.
    """
    ids: set[str] = set()
    addresses: set[str] = set()
    for tag in event.tags:
        if len(tag) < 2:
            continue
        if tag[0] == "e" and is_lower_hex(tag[1], 64):
            ids.add(tag[1])
        elif tag[0] == "a":
            address = _own_address(tag[1], event.pubkey)
            if address is not None:
                addresses.add(address)
    return sorted(ids), sorted(addresses)


def _own_address(value: str, author: str) -> str | None:
    parts = value.split(":", 2)
    if len(parts) != 3 or not parts[0].isdigit() or parts[1] != author:
        return None
    kind = int(parts[0])
    kind_class = classify(kind)
    if kind_class is KindClass.REPLACEABLE:
        return f"{kind}:{author}:"
    if kind_class is KindClass.ADDRESSABLE:
        return f"{kind}:{author}:{parts[2]}"
    return None
