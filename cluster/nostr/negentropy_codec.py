"""Negentropy protocol v1 wire format (NIP-77 appendix): varints, bounds, fingerprints (pure).

A message is a version byte then ranges; a range is an upper Bound, a mode and a payload. Bound
timestamps are delta-encoded against the previous one *within the message* (0 = infinity), so
the encoder and decoder each carry that running timestamp: `Reader` and `Writer` hold it.
Malformed input raises `NegentropyError`, whose text the relay sends after `invalid: `.
"""

from __future__ import annotations

import hashlib
from enum import IntEnum
from typing import NamedTuple

PROTOCOL_VERSION = 0x61
"""Protocol version 1; 0x60-0x6F are negentropy version bytes, anything else is not."""
ID_SIZE = 32
FINGERPRINT_SIZE = 16
INFINITY = 2**64 - 1
"""The reserved timestamp of the last bound: no item may carry it."""
MAX_VARINT_BYTES = 10
"""A 64-bit value needs at most 10 base-128 digits; more is a malformed (or hostile) message."""
MODULUS_MASK = 2**256 - 1


class NegentropyError(ValueError):
    """A message that does not follow the protocol; the session cannot go on."""


class Mode(IntEnum):
    SKIP = 0
    FINGERPRINT = 1
    ID_LIST = 2


class Bound(NamedTuple):
    """An exclusive upper bound: a timestamp and an id prefix (omitted bytes are zero)."""

    timestamp: int
    prefix: bytes = b""

    @property
    def padded_id(self) -> bytes:
        return self.prefix + bytes(ID_SIZE - len(self.prefix))


INFINITE_BOUND = Bound(INFINITY)


def _encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varints are unsigned")
    digits = [value & 0x7F]
    value >>= 7
    while value:
        digits.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(digits))


_SMALL_VARINTS = tuple(_encode_varint(value) for value in range(1 << 14))
"""Counts, modes and most timestamp deltas fit in two bytes: looked up, not computed."""


def encode_varint(value: int) -> bytes:
    """Base-128, most significant digit first, high bit set on every byte but the last."""
    if 0 <= value < 16384:
        return _SMALL_VARINTS[value]
    return _encode_varint(value)


def fingerprint(id_sum: int, count: int) -> bytes:
    """sha256(sum of ids mod 2^256 as 32 little-endian bytes || varint(count))[:16]."""
    payload = (id_sum & MODULUS_MASK).to_bytes(ID_SIZE, "little") + encode_varint(count)
    return hashlib.sha256(payload).digest()[:FINGERPRINT_SIZE]


def minimal_bound(prev_ts: int, prev_id: bytes, curr_ts: int, curr_id: bytes) -> Bound:
    """The shortest bound above `prev` and at or below `curr` (sorted neighbours)."""
    if curr_ts != prev_ts:
        return Bound(curr_ts)
    shared = 0
    while shared < ID_SIZE and curr_id[shared] == prev_id[shared]:
        shared += 1
    return Bound(curr_ts, curr_id[: shared + 1])


class Reader:
    """Reads one message front to back; the running timestamp resets with each message."""

    __slots__ = ("_data", "_last_timestamp", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0
        self._last_timestamp = 0

    @property
    def at_end(self) -> bool:
        return self._pos >= len(self._data)

    def byte(self) -> int:
        if self._pos >= len(self._data):
            raise NegentropyError("message ends prematurely")
        value = self._data[self._pos]
        self._pos += 1
        return value

    def take(self, length: int) -> bytes:
        end = self._pos + length
        if end > len(self._data):
            raise NegentropyError("message ends prematurely")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def varint(self) -> int:
        value = 0
        for _ in range(MAX_VARINT_BYTES):
            byte = self.byte()
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                if value > INFINITY:
                    raise NegentropyError("varint exceeds 64 bits")
                return value
        raise NegentropyError("varint longer than 10 bytes")

    def bound(self) -> Bound:
        encoded = self.varint()
        # 0 is infinity; others saturate like the reference: past infinity is infinity.
        timestamp = INFINITY if encoded == 0 else min(self._last_timestamp + encoded - 1, INFINITY)
        self._last_timestamp = timestamp
        length = self.varint()
        if length > ID_SIZE:
            raise NegentropyError("bound id prefix longer than 32 bytes")
        return Bound(timestamp, self.take(length))

    def mode(self) -> Mode:
        value = self.varint()
        try:
            return Mode(value)
        except ValueError:
            raise NegentropyError(f"unknown range mode {value}") from None


class Writer:
    """Builds one message; `bound` delta-encodes against the previous bound written."""

    __slots__ = ("_last_timestamp", "out")

    def __init__(self) -> None:
        self.out = bytearray()
        self._last_timestamp = 0

    def __len__(self) -> int:
        return len(self.out)

    def bound(self, bound: Bound) -> None:
        timestamp, prefix = bound
        out = self.out
        if timestamp == INFINITY:
            self._last_timestamp = INFINITY
            out += b"\x00"
        else:
            out += encode_varint(timestamp - self._last_timestamp + 1)
            self._last_timestamp = timestamp
        out += _SMALL_VARINTS[len(prefix)]
        out += prefix

    def range_header(self, bound: Bound, mode: Mode) -> None:
        self.bound(bound)
        self.out.append(mode)
