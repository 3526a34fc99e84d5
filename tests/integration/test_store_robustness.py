"""Strings PostgreSQL text cannot hold, and absurd numbers, over a real WebSocket."""

from __future__ import annotations

from cluster.nostr.signing import Signer
from tests.client import connect
from tests.services import RelayProcess


async def test_nul_in_tags_is_stored_and_queryable(relay: RelayProcess) -> None:
    signer = Signer()
    tagged = signer.sign(1, "nul\u0000content", [["t", "a\u0000b"], ["t", "back\\slash"]])
    lookalike = signer.sign(1, "escaped form", [["t", "a\\0b"]])
    async with connect(relay.url) as client:
        assert (await client.publish(tagged))[:3] == ["OK", tagged.id, True]
        assert (await client.publish(lookalike))[:3] == ["OK", lookalike.id, True]
        found = await client.query("nul", {"#t": ["a\u0000b"]})
        assert [e["id"] for e in found] == [tagged.id]
        assert found[0]["content"] == "nul\u0000content"
        assert [e["id"] for e in await client.query("esc", {"#t": ["a\\0b"]})] == [lookalike.id]
        assert [e["id"] for e in await client.query("bs", {"#t": ["back\\slash"]})] == [tagged.id]
        assert await client.query("none", {"#t": ["\u0000"]}) == []


async def test_nul_in_d_tag_of_addressable_event(relay: RelayProcess) -> None:
    signer = Signer()
    first = signer.sign(30001, "v1", [["d", "x\u0000y"]], created_at=1_700_000_000)
    second = signer.sign(30001, "v2", [["d", "x\u0000y"]], created_at=1_700_000_001)
    async with connect(relay.url) as client:
        assert (await client.publish(first))[2] is True
        assert (await client.publish(second))[2] is True
        stored = await client.query("d", {"kinds": [30001], "authors": [signer.pubkey]})
        assert [e["id"] for e in stored] == [second.id]


async def test_absurd_expiration_is_stored_as_never(relay: RelayProcess) -> None:
    signer = Signer()
    far = signer.sign(1, "forever", [["expiration", "9" * 25]])
    odd = signer.sign(1, "superscript", [["expiration", "\u00b2"]])
    async with connect(relay.url) as client:
        assert (await client.publish(far))[:3] == ["OK", far.id, True]
        assert (await client.publish(odd))[:3] == ["OK", odd.id, True]
        stored = await client.query("x", {"ids": [far.id, odd.id]})
        assert len(stored) == 2
