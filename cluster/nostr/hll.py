"""NIP-45 HyperLogLog: 256 one-byte registers over the pubkeys a COUNT counts (pure).

A relay that answers `{"count": n, "hll": "<hex>"}` lets a client merge the registers of several
relays (the highest value per register) and estimate the number of distinct authors in the
union, which no sum of counts can give. Only the register update is interoperable (NIP-45,
"Algorithm"); the estimate here follows nostr-tools' `estimateCount` (nip45.ts) so that a figure
the relay reports and one a client computes from the same registers agree.
tests/vectors/hll/ holds answers derived with nostr-tools itself.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable

from cluster.nostr.filters import Filter

REGISTERS = 256
HEX_LENGTH = 2 * REGISTERS
ZERO_BYTES_SCANNED = 7
"""Bytes after the register byte whose leading zero bits count (nostr-tools reads 7)."""
ALPHA_MM = 0.7182725932495458 * REGISTERS * REGISTERS
"""HyperLogLog's bias constant for m = 256 (0.7213 / (1 + 1.079 / m)), times m squared."""

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]*")


def offset_for(tag_value: str) -> int:
    """The register offset NIP-45 derives from a filter's first tag value (8..23).

    An id or pubkey is used as it is, an address `kind:pubkey:d` by its pubkey, anything else by
    its sha256; the hex digit at position 32, plus 8, is the offset. Deterministic, so every
    relay's registers for the same target can be merged.
    """
    hex64 = tag_value
    if not _HEX64.fullmatch(hex64):
        parts = tag_value.split(":")
        if len(parts) == 3 and _HEX64.fullmatch(parts[1]):
            hex64 = parts[1]
        else:
            hex64 = hashlib.sha256(tag_value.encode()).hexdigest()
    return int(hex64[32], 16) + 8


def hll_target(filters: Iterable[Filter]) -> str | None:
    """The tag value whose offset the registers use, when the COUNT is one NIP-45 defines an
    HLL for: one filter, one tag attribute with one value (reactions `{"kinds":[7],"#e":[id]}`,
    followers `{"kinds":[3],"#p":[key]}`, ...). NIP-45 takes the *first* tag attribute of the
    filter; with a single one, JSON key order cannot change the answer. None otherwise."""
    found = list(filters)
    if len(found) != 1:
        return None
    flt = found[0]
    if len(flt.tags) != 1 or flt.search is not None:
        return None
    values = flt.tags[0][1]
    if len(values) != 1:
        return None
    return next(iter(values))


def register_of(pubkey: bytes, offset: int) -> tuple[int, int]:
    """(register index, value) one pubkey contributes: the byte at `offset` picks the register,
    1 + the leading zero bits of the next ZERO_BYTES_SCANNED bytes is the value."""
    zeros = 0
    for byte in pubkey[offset + 1 : offset + 1 + ZERO_BYTES_SCANNED]:
        if byte:
            zeros += 8 - byte.bit_length()
            break
        zeros += 8
    return pubkey[offset], zeros + 1


def registers_of(pubkeys: Iterable[bytes], offset: int) -> bytearray:
    """The registers after feeding every pubkey (32 bytes each)."""
    registers = bytearray(REGISTERS)
    for pubkey in pubkeys:
        index, value = register_of(pubkey, offset)
        if value > registers[index]:
            registers[index] = value
    return registers


def merge(target: bytearray, source: bytes) -> bytearray:
    """Fold `source` into `target`: the highest value per register (a union of the sets)."""
    for index, value in enumerate(source):
        if value > target[index]:
            target[index] = value
    return target


def encode(registers: bytes | bytearray) -> str:
    """The 512-character lowercase hex string of the `hll` field."""
    if len(registers) != REGISTERS:
        raise ValueError(f"an HLL has {REGISTERS} registers, not {len(registers)}")
    return bytes(registers).hex()


def decode(text: str) -> bytearray:
    """Registers from an `hll` field; ValueError for anything but 512 lowercase hex digits."""
    if len(text) != HEX_LENGTH or not _HEX.fullmatch(text):
        raise ValueError(f"an hll is {HEX_LENGTH} lowercase hex characters")
    return bytearray(bytes.fromhex(text))


def estimate(registers: bytes | bytearray) -> int:
    """Distinct pubkeys the registers stand for, as nostr-tools' estimateCount computes it:
    linear counting while registers are empty and the count small, raw HyperLogLog above."""
    if len(registers) != REGISTERS:
        raise ValueError(f"an HLL has {REGISTERS} registers, not {len(registers)}")
    empty = registers.count(0)
    if empty:
        linear = REGISTERS * math.log(REGISTERS / empty)
        if linear <= 220:
            return math.floor(linear)
    total = 0.0
    for value in registers:  # summed in register order, as nostr-tools does (same rounding)
        total += 1 / 2**value
    raw = ALPHA_MM / total
    if raw <= REGISTERS * 3 and empty:
        return math.floor(REGISTERS * math.log(REGISTERS / empty))
    return math.floor(raw)
