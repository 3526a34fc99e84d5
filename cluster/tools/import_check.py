"""The CPU side of `relay-cluster import`: decode, verify and sort one chunk of lines.

Runs in worker processes (cluster/tools/jsonl.py hands each a chunk of a few thousand lines and
reads the answers back in input order), because the BIP-340 check is most of an import's
Python time: about 32 of the 37 us a line costs here (decode 2, shape and id 1, signature 32,
encode and stored form 1.5, measured on the machine of docs/OPERATIONS.md). Pure: no I/O, so a
chunk's answer depends on its lines alone.

Each valid event leaves sorted by what the store must do with it:
- a plain row (cluster/store/imports.py): regular kinds, also a kind 62 naming only other
  relays, which the relay stores like any regular event;
- `Special` in role ORDERED: replaceable and addressable kinds, saved through the relay's own
  batch save in input order (NIP-01 replacement);
- `Special` in role DELETION (kind 5) with the ids and addresses it targets, so the importer
  can tell whether it touches an event not yet written;
- `Special` in role VANISH: a kind 62 naming this relay (or ALL_RELAYS), applied like the
  relay applies it (cluster/store/vanish.py);
- ephemeral kinds are only counted: the relay never stores them either.
"""

from __future__ import annotations

from enum import IntEnum

import msgspec

from cluster.nostr.deletion import deletion_targets
from cluster.nostr.event import Event, encode_event, event_from_json, verify
from cluster.nostr.kinds import DELETION, KindClass
from cluster.nostr.rejection import Rejection
from cluster.nostr.vanish import VANISH_KIND, targets_this_relay
from cluster.store.imports import PlainRow, copy_line
from cluster.store.text import pg_text
from cluster.store.writer import storable


class Role(IntEnum):
    ORDERED = 1
    DELETION = 2
    VANISH = 3


class Special(msgspec.Struct, frozen=True):
    """A valid event that is not plain: the importer keeps it on the relay's exact path."""

    line: int
    role: Role
    event: Event
    raw: str
    target_ids: frozenset[str] = frozenset()
    """Kind 5: the ids its `e` tags name (hex, as plain rows carry theirs)."""
    target_addresses: frozenset[str] = frozenset()
    """Kind 5: the author's own addresses its `a` tags name, as the store spells them."""


Item = PlainRow | Special


class Problem(msgspec.Struct, frozen=True):
    """A line that is not stored: its number, the outcome it is counted as, and why."""

    line: int
    outcome: str
    reason: str


class CheckedChunk(msgspec.Struct):
    items: list[Item]
    """Every valid event to store, in input order."""
    problems: list[Problem]
    ephemeral: int = 0


ChunkJob = tuple[int, list[bytes], tuple[str, ...]]
"""(number of the first line, the lines, this relay's URLs for NIP-62)."""


def check_chunk(job: ChunkJob) -> CheckedChunk:
    """Every line of the chunk decoded and verified (cluster/nostr/event.py `verify`)."""
    first, lines, our_urls = job
    chunk = CheckedChunk([], [])
    for number, line in enumerate(lines, start=first):
        text = line.strip()
        if not text:
            continue
        try:
            event = event_from_json(text)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            chunk.problems.append(Problem(number, "not an event", f"not an event: {exc}"))
            continue
        rejection = verify(event)
        if rejection is None:
            rejection = _sort(number, event, our_urls, chunk)
        if rejection is not None:
            chunk.problems.append(Problem(number, "invalid", rejection.text))
    return chunk


def _sort(
    number: int, event: Event, our_urls: tuple[str, ...], chunk: CheckedChunk
) -> Rejection | None:
    kind_class = event.kind_class
    if kind_class is KindClass.EPHEMERAL:
        chunk.ephemeral += 1
        return None
    raw = encode_event(event).decode()
    if kind_class is not KindClass.REGULAR:
        chunk.items.append(Special(number, Role.ORDERED, event, raw))
        return None
    if event.kind == DELETION:
        ids, addresses = deletion_targets(event)
        own = frozenset(pg_text(address) for address in addresses)
        chunk.items.append(Special(number, Role.DELETION, event, raw, frozenset(ids), own))
        return None
    if event.kind == VANISH_KIND:
        target = targets_this_relay(event, our_urls)
        if isinstance(target, Rejection):
            return target
        if target:
            chunk.items.append(Special(number, Role.VANISH, event, raw))
            return None
    _, expires_at, tagvalues = storable(event)
    text = copy_line(number, event.id, event.pubkey, event.created_at, event.kind, expires_at,
                     tagvalues, raw)  # fmt: skip
    chunk.items.append((event.id, text))
    return None
