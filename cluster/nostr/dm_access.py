"""Who may read direct messages (kind 4, NIP-17 gift wraps 1059): their author or recipients.

Two layers, both pure: a REQ that explicitly asks for DM kinds needs NIP-42 authentication
(`filter_needs_auth`), and every DM a subscription would deliver, stored or live, passes
`may_read` first, because a filter without `kinds` matches DMs too (`filter_may_match_dms`).
"""

from __future__ import annotations

from cluster.nostr.event import Event
from cluster.nostr.filters import Filter

DM_KINDS = frozenset({4, 1059})


def filter_may_match_dms(flt: Filter) -> bool:
    """True when the filter can match a DM kind, including by having no `kinds` at all.

    Results of such a filter must go through `may_read`.
    """
    if not flt.can_match:
        return False
    return flt.kinds is None or not flt.kinds.isdisjoint(DM_KINDS)


def filter_needs_auth(flt: Filter) -> bool:
    """True when the filter explicitly lists a DM kind: answer `auth-required:` if unauthenticated.

    Filters without `kinds` do not need authentication (that would gate every generic REQ);
    the DMs they would match are dropped by `may_read` instead.
    """
    return flt.can_match and flt.kinds is not None and not flt.kinds.isdisjoint(DM_KINDS)


def filter_dms_all_readable(flt: Filter, authenticated_pubkeys: frozenset[str]) -> bool:
    """True when every DM the filter can match is one the client may read (`may_read`): it
    matches no DM kind, or its authors, or its `#p` values, are all the client's own keys.

    COUNT cannot check events one by one as REQ does, so any other filter is counted without
    the DM kinds: a count must not reveal how many DMs two other people exchanged.
    """
    if not filter_may_match_dms(flt):
        return True
    if not authenticated_pubkeys:
        return False
    if flt.authors is not None and flt.authors <= authenticated_pubkeys:
        return True
    recipients = dict(flt.tags).get("p")
    return recipients is not None and recipients <= authenticated_pubkeys


def may_read(event: Event, authenticated_pubkeys: frozenset[str]) -> bool:
    """Non-DMs: always. DMs: only their author or a `p`-tagged recipient, once authenticated."""
    if event.kind not in DM_KINDS:
        return True
    if not authenticated_pubkeys:
        return False
    if event.pubkey in authenticated_pubkeys:
        return True
    return any(
        len(tag) >= 2 and tag[0] == "p" and tag[1] in authenticated_pubkeys for tag in event.tags
    )
