"""The NIP-01 event: decoding, canonical id, BIP-340 signature and tag helpers (pure, no I/O)."""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import msgspec
import orjson
from coincurve import PublicKeyXOnly

from cluster.nostr.kinds import KindClass, classify
from cluster.nostr.rejection import Rejection, invalid

MAX_KIND = 65535
MAX_TIMESTAMP = 2**53 - 1
KEY_CACHE_SIZE = 4096
"""Parsed author keys kept per process (~100 bytes each)."""


class Event(msgspec.Struct, frozen=True, gc=False):
    """A signed Nostr event exactly as it travels on the wire."""

    id: str
    pubkey: str
    created_at: int
    kind: int
    tags: list[list[str]]
    content: str
    sig: str

    @property
    def kind_class(self) -> KindClass:
        return classify(self.kind)

    @property
    def is_ephemeral(self) -> bool:
        return self.kind_class is KindClass.EPHEMERAL

    def tag_value(self, name: str) -> str | None:
        """The first value of the first tag called `name` (NIP-01 reads `d` this way)."""
        for tag in self.tags:
            if len(tag) >= 2 and tag[0] == name:
                return tag[1]
        return None

    def tag_values(self, name: str) -> list[str]:
        return [tag[1] for tag in self.tags if len(tag) >= 2 and tag[0] == name]

    @property
    def address(self) -> str | None:
        """`kind:pubkey:d` of replaceable and addressable events: what newer versions replace."""
        kind_class = self.kind_class
        if kind_class is KindClass.REPLACEABLE:
            return f"{self.kind}:{self.pubkey}:"
        if kind_class is KindClass.ADDRESSABLE:
            return f"{self.kind}:{self.pubkey}:{self.tag_value('d') or ''}"
        return None

    @property
    def expiration(self) -> int | None:
        """NIP-40 expiry (unix seconds) or None when absent or unreadable."""
        value = self.tag_value("expiration")
        if value is None or not value.isascii() or not value.isdigit():
            return None
        return min(int(value[:20]), MAX_TIMESTAMP)  # beyond 2^53 means "never", in practice

    def indexed_tags(self) -> list[str]:
        """`letter:value` for every single-letter tag: the tags filters can ask for (NIP-01)."""
        return [f"{tag[0]}:{tag[1]}" for tag in self.tags if len(tag) >= 2 and len(tag[0]) == 1]


_event_decoder = msgspec.json.Decoder(Event)


def event_from_json(raw: bytes | str) -> Event:
    """Decode one event object; raises msgspec.ValidationError/DecodeError on bad shape."""
    return _event_decoder.decode(raw)


def event_from_object(obj: Any) -> Event:
    """Convert an already-decoded JSON object into an Event, checking every field's type."""
    return msgspec.convert(obj, Event)


def encode_event(event: Event) -> bytes:
    """The event's JSON, encoded once and spliced into every message that carries it."""
    return msgspec.json.encode(event)


def id_of_encoded(event_json: bytes) -> str:
    """The id of an event encoded by `encode_event`, without decoding it: the encoder writes
    the struct's fields in order, so the JSON starts with `{"id":"<64 hex>"`."""
    return event_json[7:71].decode()


def canonical_serialisation(event: Event) -> bytes:
    """NIP-01's `[0,pubkey,created_at,kind,tags,content]` with its exact escaping rules.

    orjson escapes only `"`, `\\` and control characters (short forms for \\b\\f\\n\\r\\t) and keeps
    everything else verbatim as UTF-8, which is exactly NIP-01's rule (checked against vectors
    signed by an independent library in tests/unit/nostr/test_event.py).
    """
    return orjson.dumps([0, event.pubkey, event.created_at, event.kind, event.tags, event.content])


def compute_id(event: Event) -> str:
    return hashlib.sha256(canonical_serialisation(event)).hexdigest()


def is_lower_hex(value: str, length: int) -> bool:
    """True for exactly `length` lowercase hex digits (no regex: bounded, allocation-light)."""
    if len(value) != length or value != value.lower():
        return False
    try:
        return len(bytes.fromhex(value)) * 2 == length
    except ValueError:
        return False


@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def _xonly_key(pubkey_hex: str) -> PublicKeyXOnly:
    """The parsed key of an author (lifting x to a curve point: 9 us of a 60 us check on this
    kind of machine), kept for the authors seen last: most events come from authors who
    published before. A key that does not parse raises and is not kept."""
    return PublicKeyXOnly(bytes.fromhex(pubkey_hex))


def has_valid_signature(event: Event) -> bool:
    """BIP-340 Schnorr check of `sig` over the 32-byte id, by libsecp256k1."""
    try:
        key = _xonly_key(event.pubkey)
        return bool(key.verify(bytes.fromhex(event.sig), bytes.fromhex(event.id)))
    except (ValueError, TypeError):
        return False


def check_shape(event: Event) -> Rejection | None:
    """Field-level checks msgspec's types cannot express: hex lengths and numeric ranges."""
    if not is_lower_hex(event.id, 64):
        return invalid("id must be 64 lowercase hex characters")
    if not is_lower_hex(event.pubkey, 64):
        return invalid("pubkey must be 64 lowercase hex characters")
    if not is_lower_hex(event.sig, 128):
        return invalid("sig must be 128 lowercase hex characters")
    if not 0 <= event.kind <= MAX_KIND:
        return invalid(f"kind must be between 0 and {MAX_KIND}")
    if not 0 <= event.created_at <= MAX_TIMESTAMP:
        return invalid("created_at must be a non-negative unix timestamp")
    return None


def verify(event: Event) -> Rejection | None:
    """Everything that makes an event authentic: shape, id and signature."""
    rejection = check_shape(event)
    if rejection is not None:
        return rejection
    if compute_id(event) != event.id:
        return invalid("event id does not match the NIP-01 serialisation")
    if not has_valid_signature(event):
        return invalid("signature does not verify")
    return None
