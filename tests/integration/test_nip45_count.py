"""NIP-45 COUNT over real relays: HyperLogLog registers that nostr-tools decodes, estimates and
merges across relays, and the planner's estimate for counts no index narrows."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from cluster.nostr import hll
from cluster.nostr.event import Event
from cluster.nostr.signing import Signer
from cluster.store.counts import EXACT_BELOW, CountAnswer, CountCache, register_value_sql
from tests.client import RelayClient, connect
from tests.nodejs import run_node
from tests.services import RelayProcess, RelayStarter, migrated_database

NIP45 = "./node_modules/nostr-tools/lib/esm/nip45.js"

# Reads {"filter", "pubkeys", "hlls"} on stdin. With nostr-tools alone: the offset of the filter,
# the registers fed with the pubkeys, and the relays' hlls decoded, merged and estimated.
CHECK_SCRIPT = f"""
import {{ computeOffset, estimateCount, feedPubkey, getFilterFirstTagValue, hllDecode,
         hllEncode, mergeHll, newHll }} from '{NIP45}'
let input = ''
for await (const chunk of process.stdin) input += chunk
const {{ filter, pubkeys, hlls }} = JSON.parse(input)
const offset = computeOffset(getFilterFirstTagValue(filter))
let local = newHll()
for (const pubkey of pubkeys) local = feedPubkey(local, pubkey, offset)
let merged = newHll()
for (const hex of hlls) merged = mergeHll(merged, hllDecode(hex))
console.log(JSON.stringify({{
  local: hllEncode(local),
  localEstimate: estimateCount(local),
  estimates: hlls.map(hex => estimateCount(hllDecode(hex))),
  merged: hllEncode(merged),
  mergedEstimate: estimateCount(merged),
}}))
"""


def nostr_tools(filt: dict[str, Any], pubkeys: list[str], hlls: list[str]) -> dict[str, Any]:
    stdin = json.dumps({"filter": filt, "pubkeys": pubkeys, "hlls": hlls}).encode()
    result: dict[str, Any] = json.loads(run_node(CHECK_SCRIPT, stdin))
    return result


async def count(client: RelayClient, *filters: dict[str, Any]) -> dict[str, Any]:
    await client.send(["COUNT", "n", *filters])
    _, answer = await client.receive_until(lambda m: m[0] in ("COUNT", "CLOSED"))
    assert answer[0] == "COUNT", answer
    result: dict[str, Any] = answer[2]
    return result


async def publish_all(url: str, events: list[Event]) -> None:
    async with connect(url) as client:
        for event in events:
            assert (await client.publish(event))[2] is True


async def test_reactions_count_carries_registers_nostr_tools_reads(relay: RelayProcess) -> None:
    note = Signer().sign(1, "a note people like")
    reactors = [Signer() for _ in range(60)]
    reactions = [signer.sign(7, "+", [["e", note.id], ["p", note.pubkey]]) for signer in reactors]
    # Noise the filter must leave out: a reply to the note, and a reaction to another note.
    others = [
        Signer().sign(1, "reply", [["e", note.id]]),
        reactors[0].sign(7, "+", [["e", "ab" * 32]]),
    ]
    await publish_all(relay.url, [note, *reactions, *others])
    filt = {"kinds": [7], "#e": [note.id]}
    async with connect(relay.url) as client:
        answer = await count(client, filt)
    assert answer["count"] == 60 and "approximate" not in answer
    checked = nostr_tools(filt, [signer.pubkey for signer in reactors], [answer["hll"]])
    assert answer["hll"] == checked["local"]  # the registers nostr-tools computes itself
    assert checked["estimates"] == [checked["localEstimate"]]
    assert abs(checked["localEstimate"] - 60) <= 15  # 5 standard deviations for 60 keys


async def test_followers_count_has_registers_and_other_counts_do_not(relay: RelayProcess) -> None:
    followed = Signer()
    followers = [Signer() for _ in range(25)]
    lists = [signer.sign(3, "", [["p", followed.pubkey], ["p", "cd" * 32]]) for signer in followers]
    mention = Signer().sign(1, "hi", [["p", followed.pubkey]])
    await publish_all(relay.url, [*lists, mention])
    filt = {"kinds": [3], "#p": [followed.pubkey]}
    async with connect(relay.url) as client:
        answer = await count(client, filt)
        assert answer["count"] == 25
        assert answer["hll"] == nostr_tools(filt, [s.pubkey for s in followers], [])["local"]
        # Two values, or two filters: NIP-45 defines no offset, so no registers.
        plain = await count(client, {"kinds": [3], "#p": [followed.pubkey, "ef" * 32]})
        assert plain == {"count": 25}
        both = await count(client, filt, {"kinds": [1], "#p": [followed.pubkey]})
        assert both == {"count": 26}


@pytest.fixture
async def second_database(postgres_server_url: str) -> AsyncIterator[str]:
    async with migrated_database(postgres_server_url, "relay_nip45") as url:
        yield url


async def test_two_relays_registers_merge_to_the_union(
    relay: RelayProcess, second_database: str, start_relay: RelayStarter
) -> None:
    other = start_relay.start(workers=1, DATABASE_URL=second_database)
    note = Signer().sign(1, "posted to both relays")
    shared = [Signer() for _ in range(150)]
    only_first = [Signer() for _ in range(60)]
    only_second = [Signer() for _ in range(40)]

    def reactions(signers: list[Signer]) -> list[Event]:
        return [signer.sign(7, "+", [["e", note.id]]) for signer in signers]

    await publish_all(relay.url, [note, *reactions(shared + only_first)])
    await publish_all(other.url, [note, *reactions(shared + only_second)])
    filt = {"kinds": [7], "#e": [note.id]}
    async with connect(relay.url) as first, connect(other.url) as second:
        a, b = await count(first, filt), await count(second, filt)
    assert (a["count"], b["count"]) == (210, 190)
    union = [signer.pubkey for signer in shared + only_first + only_second]
    checked = nostr_tools(filt, union, [a["hll"], b["hll"]])
    # Merged registers are exactly those of the union: the estimate is of 250 distinct authors
    # (within 4 standard deviations), where adding the two counts would say 400.
    assert checked["merged"] == checked["local"]
    assert checked["mergedEstimate"] == checked["localEstimate"]
    assert abs(checked["mergedEstimate"] - 250) < 60, checked["mergedEstimate"]


BULK = 3 * EXACT_BELOW
SEED = """INSERT INTO events (id, pubkey, created_at, kind, raw)
SELECT sha256(int4send(i)), sha256(int4send(i %% 500)), 1700000000 + i,
       CASE WHEN i %% 10 = 0 THEN 7 ELSE 1 END, '{}'
FROM generate_series(1, %s) AS i"""


@pytest.fixture
async def large_database(postgres_server_url: str) -> AsyncIterator[str]:
    async with migrated_database(postgres_server_url, "relay_nip45_bulk") as url:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(SEED, (BULK,))
            await conn.execute("ANALYZE events")
        yield url


async def test_counts_no_index_narrows_are_estimated(
    large_database: str, start_relay: RelayStarter
) -> None:
    relay = start_relay.start(workers=1, DATABASE_URL=large_database)
    async with connect(relay.url) as client:
        everything = await count(client, {})
        assert everything["approximate"] is True
        assert abs(everything["count"] - BULK) < BULK * 0.05, everything
        notes = await count(client, {"kinds": [1]}, {"since": 1})
        assert notes["approximate"] is True and notes["count"] > EXACT_BELOW
        # Few estimated rows: counted exactly, even without a selective field.
        assert await count(client, {"kinds": [7], "until": 1700000000 + 1000}) == {"count": 100}
        # A selective filter is always exact.
        author = hashlib.sha256(struct.pack(">i", 0)).hexdigest()  # SEED's sha256(int4send(0))
        by_author = await count(client, {"authors": [author]})
        assert by_author == {"count": BULK // 500}


async def test_registers_folded_in_sql_equal_the_python_rule(database_url: str) -> None:
    """counts.register_value_sql (what the relay runs) against hll.register_of on keys with
    zero bytes and bits right after the register byte, at the lowest and highest offsets."""
    keys = [os.urandom(32) for _ in range(50)]
    for offset in (8, 15, 23):
        for zero_bytes in range(8):
            crafted = bytearray(os.urandom(32))
            crafted[offset + 1 : offset + 1 + zero_bytes] = bytes(zero_bytes)
            if zero_bytes < 7:
                crafted[offset + 1 + zero_bytes] = 1 << (zero_bytes % 8)
            keys.append(bytes(crafted))
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        for offset in (8, 15, 23):
            cursor = await conn.execute(
                f"SELECT get_byte(pubkey, {offset}), {register_value_sql(offset)}"
                " FROM unnest(%s::bytea[]) AS pubkey",
                (keys,),
            )
            assert await cursor.fetchall() == [hll.register_of(k, offset) for k in keys]


def test_only_large_slow_answers_are_cached_and_only_for_a_while() -> None:
    cache = CountCache(seconds=30, entries=2)
    big, small = CountAnswer(5000, hll=bytes(256)), CountAnswer(3)
    cache.put("slow big", big, cost=0.05, now=100)
    cache.put("fast big", big, cost=0.001, now=100)
    cache.put("slow small", small, cost=0.05, now=100)
    assert cache.get("slow big", 129) == big
    assert cache.get("fast big", 101) is None and cache.get("slow small", 101) is None
    assert cache.get("slow big", 130) is None  # expired
    for name in ("a", "b", "c"):
        cache.put(name, big, cost=1, now=200)
    assert cache.get("a", 201) is None and cache.get("c", 201) == big  # LRU bound
