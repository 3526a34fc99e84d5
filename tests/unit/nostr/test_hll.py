"""cluster/nostr/hll.py: which COUNTs get registers, encoding, and the register rule."""

from __future__ import annotations

import orjson
import pytest

from cluster.nostr import hll
from cluster.nostr.filters import FilterLimits, parse_filter
from cluster.nostr.messages import count_message

LIMITS = FilterLimits()
NOTE = "ab" * 32


def target(*filters: dict[str, object]) -> str | None:
    return hll.hll_target([parse_filter(flt, LIMITS) for flt in filters])


def test_the_nip45_common_filters_get_registers() -> None:
    assert target({"kinds": [7], "#e": [NOTE]}) == NOTE
    assert target({"kinds": [3], "#p": [NOTE]}) == NOTE
    assert target({"kinds": [1, 1111], "#q": [NOTE]}) == NOTE
    assert target({"kinds": [1111], "#E": [NOTE]}) == NOTE
    assert target({"kinds": [30023], "#a": [f"30023:{NOTE}:d"]}) == f"30023:{NOTE}:d"


@pytest.mark.parametrize(
    "filters",
    [
        [{"kinds": [7]}],  # no tag
        [{"kinds": [7], "#e": [NOTE, "cd" * 32]}],  # two values
        [{"#e": [NOTE], "#p": [NOTE]}],  # two tag attributes: "first" is ambiguous
        [{"#e": [NOTE]}, {"#e": [NOTE]}],  # two filters
        [{"#e": [NOTE], "search": "hello"}],
    ],
)
def test_other_counts_get_no_registers(filters: list[dict[str, object]]) -> None:
    assert target(*filters) is None


def test_encode_decode_round_trip_and_refusals() -> None:
    registers = bytearray(range(256))
    text = hll.encode(registers)
    assert len(text) == 512 and hll.decode(text) == registers
    for bad in ("00" * 255, "GG" * 256, "AB" * 256):
        with pytest.raises(ValueError):
            hll.decode(bad)
    with pytest.raises(ValueError):
        hll.encode(bytes(255))


def test_register_rule_reads_offset_then_zero_bits() -> None:
    key = bytearray(32)
    key[10] = 0x7F  # register byte at offset 10
    key[11] = 0x00
    key[12] = 0x10  # 8 + 3 leading zero bits
    assert hll.register_of(bytes(key), 10) == (0x7F, 12)
    key[12] = 0
    assert hll.register_of(bytes(key), 10) == (0x7F, 57)  # seven zero bytes: 56 + 1


def test_estimate_small_and_empty() -> None:
    assert hll.estimate(bytes(256)) == 0
    assert hll.estimate(hll.registers_of([bytes(range(32))], 8)) == 1


def test_count_message_carries_hll_and_approximate_only_when_given() -> None:
    assert count_message("c", 5) == b'["COUNT","c",{"count":5}]'
    registers = hll.encode(bytes(256))
    assert orjson.loads(count_message("c", 5, registers)) == [
        "COUNT",
        "c",
        {"count": 5, "hll": registers},
    ]
    assert orjson.loads(count_message("c", 9, approximate=True)) == [
        "COUNT",
        "c",
        {"count": 9, "approximate": True},
    ]
