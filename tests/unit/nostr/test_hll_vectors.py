"""cluster/nostr/hll.py against known answers computed by nostr-tools' nip45
(tests/vectors/hll/generate.mjs wrote tests/vectors/hll/nostr-tools.json)."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from cluster.nostr import hll

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "hll" / "nostr-tools.json"


@cache
def vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS.read_text())
    return data


def pubkeys(seed: str, n: int) -> list[bytes]:
    """The generator's set: sha256("<seed>:<i>") for i < n."""
    return [hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(n)]


def test_the_vectors_come_from_nostr_tools() -> None:
    assert vectors()["generator"].startswith("nostr-tools 2.")
    assert len(vectors()["sets"]) >= 30


@pytest.mark.parametrize("case", vectors()["offsetCases"], ids=lambda case: case["value"][:20])
def test_offset_of_a_tag_value(case: dict[str, Any]) -> None:
    assert hll.offset_for(case["value"]) == case["offset"]


@pytest.mark.parametrize("case", vectors()["crafted"], ids=lambda c: f"{c['offset']}")
def test_register_value_counts_zero_bits_after_the_register_byte(case: dict[str, Any]) -> None:
    registers = hll.registers_of([bytes.fromhex(case["pubkey"])], case["offset"])
    assert hll.encode(registers) == case["hll"]


@pytest.mark.parametrize("case", vectors()["sets"], ids=lambda c: f"{c['n']}@{c['offset']}")
def test_registers_and_estimate_of_a_set(case: dict[str, Any]) -> None:
    registers = hll.registers_of(pubkeys(case["seed"], case["n"]), case["offset"])
    assert hll.encode(registers) == case["hll"]
    assert hll.estimate(registers) == case["estimate"]
    assert hll.estimate(hll.decode(case["hll"])) == case["estimate"]


@pytest.mark.parametrize("case", vectors()["merges"], ids=lambda c: f"{c['a']}+{c['b']}")
def test_merging_two_relays_registers_estimates_the_union(case: dict[str, Any]) -> None:
    shared = pubkeys(f"merge-shared-{case['shared']}", case["shared"])
    left = shared + pubkeys(f"merge-a-{case['a']}", case["a"] - case["shared"])
    right = shared + pubkeys(f"merge-b-{case['b']}", case["b"] - case["shared"])
    x, y = hll.registers_of(left, case["offset"]), hll.registers_of(right, case["offset"])
    assert (hll.encode(x), hll.encode(y)) == (case["left"], case["right"])
    merged = hll.merge(bytearray(x), y)
    assert hll.encode(merged) == case["merged"]
    assert hll.estimate(merged) == case["estimate"]
    union = case["a"] + case["b"] - case["shared"]
    assert abs(case["estimate"] - union) < 0.2 * union  # the point of merging: the union
