"""The parallel `import` (worker processes, COPY of plain events) against the relay's own path.

Tiny chunks and batches force every boundary: the lines are spread over many chunks checked by
two processes, and segments are written every three events, so a deletion meets its target in
the pending segment, in an earlier one and in a later one. The same valid events saved one by
one through the relay's batch save (cluster/store/writer.py) must leave the same rows and the
same outcomes; bad lines are reported with their numbers; a second import changes nothing.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psycopg

from cluster.config import DatabaseSettings
from cluster.nostr.event import Event, encode_event
from cluster.nostr.signing import Signer
from cluster.store.pool import create_write_pool
from cluster.store.writer import PostgresBatchSaver, SaveRequest
from cluster.tools.jsonl import import_events
from tests.services import migrated_database

STATE = [
    "SELECT raw FROM events ORDER BY id",
    "SELECT tagvalue, event_id FROM event_tags ORDER BY 1, 2",
    "SELECT target, pubkey, deleted_at FROM deletions ORDER BY 1, 2",
    "SELECT pubkey, until FROM vanished ORDER BY 1",
]


async def state(url: str) -> list[list[tuple[object, ...]]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        return [await (await conn.execute(sql)).fetchall() for sql in STATE]


def note(reported: list[tuple[int, str]]) -> Callable[[int, str], None]:
    return lambda number, reason: reported.append((number, reason))


def mixed_events() -> list[Event]:
    """Every rule an import must keep, in an order where each one crosses chunks."""
    a, b = Signer(), Signer()
    t = int(time.time()) - 1000
    note = [a.sign(1, f"note {i}", [["t", "x"]], t + i) for i in range(6)]
    odd = a.sign(1, 'tab\there "q" \\ \n é', [["t", 'a\tb\\c"d\ne'], ["t", "nul\x00"]], t + 7)
    early, late = a.sign(0, '{"name":"old"}', [], t + 10), a.sign(0, '{"name":"new"}', [], t + 20)
    article = a.sign(30023, "v1", [["d", "post"]], t + 30)
    by_address = a.sign(5, "", [["a", f"30023:{a.pubkey}:post"]], t + 31)
    article_back = a.sign(30023, "v2", [["d", "post"]], t + 32)
    return [
        note[0], note[1],
        a.sign(5, "", [["e", note[1].id]], t + 40),  # its target is in the pending segment
        note[2], odd,
        note[0],  # a duplicate within the file
        a.sign(5, "", [["e", note[4].id]], t + 41),  # its target comes later: refused then
        b.sign(5, "", [["e", note[2].id]], t + 42),  # another author's: NIP-09 ignores it
        late, note[3], early,  # the older profile is superseded
        note[4], note[5], article, by_address, article_back,
        b.sign(7, "+", [["e", note[0].id]], t + 50),
        a.sign(5, "", [["e", note[0].id]], t + 60),  # its target was written long ago
        b.sign(20001, "ephemeral", [], t + 61),
    ]  # fmt: skip


async def save_one_by_one(url: str, events: list[Event]) -> Counter[str]:
    pool = create_write_pool(DatabaseSettings(url=url), size=1, name="reference")
    await pool.open()
    outcomes: Counter[str] = Counter()
    try:
        saver = PostgresBatchSaver(pool)
        for event in events:
            if event.is_ephemeral:
                outcomes["ephemeral"] += 1  # the relay never stores them
                continue
            saved = await saver.save_many([SaveRequest(event, encode_event(event).decode())])
            outcomes.update(str(outcome) for outcome in saved)
    finally:
        await pool.close()
    return outcomes


async def test_parallel_import_equals_the_relay_path(
    postgres_server_url: str, tmp_path: Path
) -> None:
    events = mixed_events()
    lines = [encode_event(event) for event in events]
    forged = json.dumps(json.loads(lines[2]) | {"content": "forged"}).encode()
    bad = [b"not json", forged, b"\xff\xfe not utf-8", b"{}"]
    rows = [
        *lines[:2],
        bad[0],
        *lines[2:5],
        b"   ",
        bad[1],
        *lines[5:9],
        bad[2],
        *lines[9:],
        bad[3],
    ]
    bad_lines = [number for number, row in enumerate(rows, start=1) if row in bad]
    source = tmp_path / "mixed.jsonl"
    source.write_bytes(b"\n".join(rows) + b"\n")

    async with (
        migrated_database(postgres_server_url, "jsonl_parallel") as target,
        migrated_database(postgres_server_url, "jsonl_reference") as reference,
    ):
        reported: list[tuple[int, str]] = []
        settings = DatabaseSettings(url=target)

        async def run() -> dict[str, int]:
            reported.clear()
            return await import_events(
                settings, str(source), 3, processes=2, chunk_lines=3, problem=note(reported)
            )

        first = await run()
        expected = await save_one_by_one(reference, events)
        assert first == dict(sorted((expected + Counter(invalid=1, **{"not an event": 3})).items()))
        assert expected["deleted"] == 1 and expected["superseded"] == 1
        assert expected["duplicate"] == 1 and expected["ephemeral"] == 1
        assert [n for n, _ in reported] == bad_lines
        assert [why.split(":")[0] for _, why in reported] == [
            "not an event", "invalid", "not an event", "not an event"]  # fmt: skip
        assert "does not match" in reported[1][1]
        assert await state(target) == await state(reference)

        before = await state(target)
        again = await run()
        assert "stored" not in again
        assert await state(target) == before
        assert len(reported) == len(bad)


async def test_parallel_import_applies_a_request_to_vanish(
    postgres_server_url: str, tmp_path: Path
) -> None:
    author, other = Signer(), Signer()
    t = int(time.time()) - 1000
    before = [author.sign(1, f"before {i}", [], t + i) for i in range(5)]
    request = author.sign(62, "", [["relay", "ALL_RELAYS"]], t + 10)
    elsewhere = author.sign(62, "", [["relay", "wss://elsewhere.example"]], t + 11)
    nameless = author.sign(62, "", [], t + 12)
    older_after, newer = author.sign(1, "older", [], t + 5), author.sign(1, "newer", [], t + 20)
    events = [*before, other.sign(1, "kept", [], t), request, elsewhere, older_after, newer]
    lines = [encode_event(event) for event in events]
    lines.insert(7, encode_event(nameless))
    source = tmp_path / "vanish.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    async with migrated_database(postgres_server_url, "jsonl_vanish") as url:
        reported: list[tuple[int, str]] = []
        outcomes = await import_events(
            DatabaseSettings(url=url), str(source), 2, processes=2, chunk_lines=2,
            our_urls=["wss://relay.example"], problem=note(reported),
        )  # fmt: skip
        assert outcomes == {"invalid": 1, "stored": 8, "vanish applied": 1, "vanished": 1}
        assert reported == [
            (8, "invalid: a request to vanish (kind 62) must name at least one relay")
        ]
        raws, _, _, vanished = await state(url)
        stored = {json.loads(str(raw))["content"] for (raw,) in raws}
        assert stored == {"kept", "", "newer"}  # the request naming another relay is an event
        assert vanished == [(bytes.fromhex(author.pubkey), t + 10)]
