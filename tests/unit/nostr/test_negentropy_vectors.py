"""Known answers from nostr-tools (tests/vectors/negentropy/vectors.json, regenerate.py there):
our fingerprints, initial messages, server replies and client steps equal its bytes."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from cluster.nostr.negentropy import Negentropy, Storage

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "negentropy" / "vectors.json"


@cache
def vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS.read_text())
    return data


def storage(items: list[list[Any]]) -> Storage:
    return Storage.from_items((int(ts), bytes.fromhex(item_id)) for ts, item_id in items)


def frame(case: dict[str, Any]) -> int:
    """nostr-tools has no "unlimited": its huge limit is our 0."""
    limit = int(case["frame"])
    return 0 if limit >= 10**9 else limit


def test_the_vectors_cover_every_section() -> None:
    data = vectors()
    assert len(data["fingerprints"]) >= 5
    assert len(data["initiate"]) >= 7
    assert len(data["exchanges"]) >= 7
    assert any(case["next"] for case in data["exchanges"]), "no exchange goes a second round"
    assert any(case["have"] for case in data["exchanges"])
    assert any(case["need"] for case in data["exchanges"])


@pytest.mark.parametrize("index", range(5))
def test_fingerprints(index: int) -> None:
    case = vectors()["fingerprints"][index]
    items = storage(case["items"])
    got = [items.fingerprint(lower, upper).hex() for lower, upper in case["ranges"]]
    assert got == case["expected"]


@pytest.mark.parametrize("index", range(7))
def test_initial_messages(index: int) -> None:
    case = vectors()["initiate"][index]
    assert Negentropy(storage(case["items"]), frame(case)).initiate().hex() == case["message"]


@pytest.mark.parametrize("index", range(7))
def test_exchanges(index: int) -> None:
    case = vectors()["exchanges"][index]
    client = Negentropy(storage(case["client"]), frame(case))
    server = Negentropy(storage(case["server"]), frame(case))
    query = client.initiate()
    assert query.hex() == case["query"]
    reply = server.reconcile(query)
    assert reply.hex() == case["reply"]
    step = client.client_reconcile(reply)
    assert (step.message.hex() if step.message else None) == case["next"]
    assert sorted(item.hex() for item in step.have) == case["have"]
    assert sorted(item.hex() for item in step.need) == case["need"]
