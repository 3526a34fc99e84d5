"""Direct messages (kinds 4 and 1059) are readable only by their author and recipients."""

from __future__ import annotations

import pytest

from cluster.nostr.dm_access import (
    filter_dms_all_readable,
    filter_may_match_dms,
    filter_needs_auth,
    may_read,
)
from cluster.nostr.filters import FilterLimits, parse_filter
from cluster.nostr.signing import Signer

SENDER = Signer()
RECIPIENT = Signer()
STRANGER = Signer()
LIMITS = FilterLimits()


@pytest.mark.parametrize(
    ("raw", "needs_auth", "may_match"),
    [
        ({"kinds": [4]}, True, True),
        ({"kinds": [1059]}, True, True),
        ({"kinds": [1, 4]}, True, True),
        ({"kinds": [1, 1111, 14]}, False, False),
        ({}, False, True),
        ({"authors": ["ab" * 32]}, False, True),
        ({"kinds": []}, False, False),
        ({"kinds": [4], "ids": []}, False, False),  # cannot match anything
        ({"kinds": [4], "since": 10, "until": 5}, False, False),
    ],
)
def test_filters(raw: dict[str, object], needs_auth: bool, may_match: bool) -> None:
    flt = parse_filter(raw, LIMITS)
    assert filter_needs_auth(flt) is needs_auth
    assert filter_may_match_dms(flt) is may_match


@pytest.mark.parametrize("kind", [4, 1059])
def test_dm_readers(kind: int) -> None:
    dm = SENDER.sign(kind, "secret", [["p", RECIPIENT.pubkey]])
    assert may_read(dm, frozenset({SENDER.pubkey}))
    assert may_read(dm, frozenset({RECIPIENT.pubkey}))
    assert may_read(dm, frozenset({STRANGER.pubkey, RECIPIENT.pubkey}))
    assert not may_read(dm, frozenset({STRANGER.pubkey}))
    assert not may_read(dm, frozenset())


def test_only_p_tags_name_recipients() -> None:
    dm = SENDER.sign(4, "secret", [["e", RECIPIENT.pubkey], ["P", RECIPIENT.pubkey], ["p"]])
    assert not may_read(dm, frozenset({RECIPIENT.pubkey}))


def test_other_kinds_are_public() -> None:
    note = SENDER.sign(1, "hello", [["p", RECIPIENT.pubkey]])
    assert may_read(note, frozenset())
    assert may_read(SENDER.sign(14, "x"), frozenset())


def test_counted_dms_must_all_be_the_clients_own() -> None:
    me, other, third = Signer().pubkey, Signer().pubkey, Signer().pubkey
    mine = frozenset({me})

    def readable(raw: dict[str, object], keys: frozenset[str] = mine) -> bool:
        return filter_dms_all_readable(parse_filter(raw, LIMITS), keys)

    assert readable({"kinds": [1], "authors": [other]})  # no DM kind: nothing to hide
    assert readable({"kinds": [4], "authors": [me]})
    assert readable({"kinds": [4], "#p": [me]})
    assert readable({"authors": [me]})  # every DM it can match is my own
    assert not readable({"kinds": [4], "authors": [other], "#p": [third]})
    assert not readable({"kinds": [4], "authors": [me, other]})
    assert not readable({"authors": [other]})  # no kinds: may match other people's DMs
    assert not readable({"kinds": [4], "authors": [me]}, frozenset())  # not authenticated
