"""NIP-77 against a real relay: nostr-tools (node) reconciles with it, our own client role does
too, and our client role reconciles with nostr-tools acting as the other side; every limit and
every malformed message is answered NEG-ERR while the connection lives on."""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from cluster.nostr.filters import Filter
from cluster.nostr.negentropy import Negentropy, Storage
from cluster.nostr.signing import Signer
from cluster.store.items import fetch_items
from cluster.tools.sync import SyncError, reconcile
from tests.client import RelayClient, connect
from tests.nodejs import JS_DIR, ensure_node_modules, run_node
from tests.services import RelayProcess, RelayStarter

NODE_CLIENT = r"""
import fs from 'node:fs'
import {Relay} from './node_modules/nostr-tools/lib/esm/relay.js'
import {NegentropyStorageVector, NegentropySync} from './node_modules/nostr-tools/lib/esm/nip77.js'

const input = JSON.parse(fs.readFileSync(0, 'utf8'))
const relay = await Relay.connect(input.url)
const storage = new NegentropyStorageVector()
for (const [ts, id] of input.items) storage.insert(ts, id)
storage.seal()
const have = [], need = [], errors = []
// Listen beside nostr-tools' own handler: its onclose cannot tell a NEG-ERR from the end.
relay.ws.addEventListener('message', ev => {
  const data = JSON.parse(ev.data)
  if (data[0] === 'NEG-ERR') errors.push(data[2])
})
const outcome = await new Promise(resolve => {
  const sync = new NegentropySync(relay, storage, input.filter, {
    onhave: id => have.push(id),
    onneed: id => need.push(id),
    onclose: reason => resolve(reason ?? 'done'),
  })
  // The relay reads messages of at most max_message_length (NIP-11): frames must fit, hex-encoded.
  sync.neg.frameSizeLimit = input.frame
  sync.start()
  setTimeout(() => resolve('timeout'), 60000)
})
process.stdout.write(JSON.stringify({outcome, errors, have: have.sort(), need: need.sort()}))
process.exit(0)
"""

NODE_PEER = r"""
import readline from 'node:readline'
import {Negentropy, NegentropyStorageVector} from './node_modules/nostr-tools/lib/esm/nip77.js'

const lines = readline.createInterface({input: process.stdin})
let neg = null
for await (const line of lines) {
  const input = JSON.parse(line)
  if (input.items) {
    const storage = new NegentropyStorageVector()
    for (const [ts, id] of input.items) storage.insert(ts, id)
    storage.seal()
    neg = new Negentropy(storage, input.frame)
    console.log(JSON.stringify({ready: true}))
    continue
  }
  const have = [], need = []
  const reply = neg.reconcile(input.message, id => have.push(id), id => need.push(id))
  console.log(JSON.stringify({reply, have, need}))
}
"""


def random_rows(rnd: random.Random, count: int, spread: int) -> list[tuple[int, bytes]]:
    return [(1_700_000_000 + rnd.randrange(spread), rnd.randbytes(32)) for _ in range(count)]


@pytest.fixture
async def stored_rows(database_url: str) -> AsyncIterator[tuple[str, list[tuple[int, bytes]]]]:
    """5,000 rows of one fresh author straight into the events table (only (created_at, id)
    matter to NIP-77), with many equal timestamps; removed afterwards."""
    rnd = random.Random(os.getpid())
    pubkey = rnd.randbytes(32)
    rows = random_rows(rnd, 5000, 400)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        async with conn.cursor().copy(
            "COPY events (id, pubkey, created_at, kind, raw) FROM STDIN"
        ) as copy:
            for created_at, event_id in rows:
                raw = f'{{"id":"{event_id.hex()}","kind":1}}'  # all a REQ reads of it
                await copy.write_row((event_id, pubkey, created_at, 1, raw))
        try:
            yield pubkey.hex(), rows
        finally:
            await conn.execute("DELETE FROM events WHERE pubkey = %s", (pubkey,))


def split(
    rows: list[tuple[int, bytes]], rnd: random.Random
) -> tuple[list[tuple[int, bytes]], set[str], set[str]]:
    """A client set: the relay's rows less some, plus some of its own; (set, have, need)."""
    missing = set(rnd.sample(range(len(rows)), 300))
    extra = random_rows(rnd, 200, 400)
    client = [row for index, row in enumerate(rows) if index not in missing] + extra
    return client, {i.hex() for _, i in extra}, {rows[index][1].hex() for index in missing}


def node_client(url: str, flt: dict[str, Any], items: list[tuple[int, bytes]]) -> dict[str, Any]:
    payload = {
        "url": url,
        "filter": flt,
        "items": [[ts, i.hex()] for ts, i in items],
        "frame": 16384,
    }
    out = run_node(NODE_CLIENT, json.dumps(payload).encode(), flags=["--experimental-websocket"])
    result: dict[str, Any] = json.loads(out)
    return result


async def test_item_list_is_every_match_sorted_by_created_at_then_id(
    database_url: str, stored_rows: tuple[str, list[tuple[int, bytes]]]
) -> None:
    pubkey, rows = stored_rows
    flt = Filter(authors=frozenset({pubkey}))
    async with AsyncConnectionPool(database_url, min_size=1, max_size=1, open=False) as pool:
        items = await fetch_items(pool, flt, int(time.time()), frozenset(), 10_000)
        too_many = await fetch_items(pool, flt, int(time.time()), frozenset(), 4999)
        hidden = await fetch_items(pool, flt, int(time.time()), frozenset({1}), 10_000)
    expected = sorted(rows)
    assert items.count == 5000
    assert items.timestamps == b"".join(ts.to_bytes(8, "big") for ts, _ in expected)
    assert items.ids == b"".join(event_id for _, event_id in expected)
    assert (too_many.count, too_many.ids) == (5000, b"")
    assert (hidden.count, hidden.ids) == (0, b"")


def test_nip11_lists_77(relay: RelayProcess) -> None:
    request = urllib.request.Request(relay.http_url, headers={"Accept": "application/nostr+json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert 77 in json.loads(response.read())["supported_nips"]


async def test_nostr_tools_client_reconciles_with_our_relay(
    relay: RelayProcess, stored_rows: tuple[str, list[tuple[int, bytes]]]
) -> None:
    pubkey, rows = stored_rows
    client, have, need = split(rows, random.Random(1))
    result = node_client(relay.url, {"authors": [pubkey]}, client)
    assert result["outcome"] == "done" and result["errors"] == []
    assert set(result["have"]) == have
    assert set(result["need"]) == need


async def test_our_client_role_reconciles_with_our_relay(
    relay: RelayProcess, stored_rows: tuple[str, list[tuple[int, bytes]]]
) -> None:
    pubkey, rows = stored_rows
    client, have, need = split(rows, random.Random(2))
    async with connect(relay.url) as ws:
        difference = await reconcile(
            ws.ws, {"authors": [pubkey]}, Storage.from_items(client), frame_size_limit=4096
        )
        assert difference.rounds > 1  # the small frame limit makes it take several
        assert set(difference.have) == have and set(difference.need) == need
        # Equal sets: one round, nothing to do; the connection is still fine for REQ.
        same = await reconcile(ws.ws, {"authors": [pubkey]}, Storage.from_items(rows))
        assert (same.have, same.need, same.rounds) == ([], [], 1)
        found = await ws.query("after", {"ids": [rows[0][1].hex()]})
        assert found == [{"id": rows[0][1].hex(), "kind": 1}]


def test_our_client_role_reconciles_with_nostr_tools_as_the_other_side() -> None:
    """nostr-tools plays the responder over stdin/stdout. It has one code path for both roles:
    an id list we send is compared on *its* side (it reports have/need and answers Skip),
    so the difference is what either side learnt, and together they learn all of it."""
    rnd = random.Random(3)
    common = random_rows(rnd, 3000, 300)
    ours = random_rows(rnd, 150, 300)
    theirs = random_rows(rnd, 120, 300)
    ensure_node_modules()
    peer = subprocess.Popen(
        ["node", "--input-type=module", "-e", NODE_PEER],
        cwd=JS_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert peer.stdin is not None and peer.stdout is not None

    def ask(payload: dict[str, Any]) -> dict[str, Any]:
        assert peer.stdin is not None and peer.stdout is not None
        peer.stdin.write(json.dumps(payload) + "\n")
        peer.stdin.flush()
        answer: dict[str, Any] = json.loads(peer.stdout.readline())
        return answer

    try:
        items = [[ts, i.hex()] for ts, i in common + theirs]
        assert ask({"items": items, "frame": 8192}) == {"ready": True}
        client = Negentropy(Storage.from_items(common + ours), 8192)
        message: bytes | None = client.initiate()
        learnt_have: set[str] = set()
        learnt_need: set[str] = set()
        rounds = 0
        while message is not None:
            rounds += 1
            assert rounds < 100
            answer = ask({"message": message.hex()})
            learnt_have |= set(answer["need"])  # what the peer needs is what only we have
            learnt_need |= set(answer["have"])
            # nostr-tools answers null where the reference sends its bare version byte.
            step = client.client_reconcile(bytes.fromhex(answer["reply"] or "61"))
            learnt_have |= {i.hex() for i in step.have}
            learnt_need |= {i.hex() for i in step.need}
            message = step.message
    finally:
        peer.stdin.close()
        peer.wait(10)
    assert rounds > 1
    assert learnt_have == {i.hex() for _, i in ours}
    assert learnt_need == {i.hex() for _, i in theirs}


async def neg_err(ws: RelayClient, sub_id: str) -> list[Any]:
    _, answer = await ws.receive_until(lambda m: m[0].startswith("NEG") and m[1] == sub_id)
    assert answer[0] == "NEG-ERR", answer
    return answer


async def alive(ws: RelayClient) -> None:
    """The connection still serves: a REQ gets its EOSE."""
    assert await ws.query("alive", {"ids": ["00" * 32]}) == []


@pytest.mark.parametrize(
    ("message", "prefix"),
    [
        (["NEG-OPEN", "n", {}, "6"], "invalid: negentropy message is not valid hex"),
        (["NEG-OPEN", "n", {}, "zz"], "invalid: negentropy message is not valid hex"),
        (["NEG-OPEN", "n", {}, ""], "invalid: negentropy message must be"),
        (["NEG-OPEN", "n", {}, 97], "invalid: negentropy message must be"),
        (["NEG-OPEN", "n", {}, "20"], "invalid: invalid negentropy protocol version"),
        (["NEG-OPEN", "n", {}, "6100"], "invalid: message ends prematurely"),
        (["NEG-OPEN", "n", {"kinds": "x"}, "61"], "invalid: "),
        (["NEG-OPEN", "n", {"ids": ["ab"]}, "61"], "invalid: "),
        (["NEG-OPEN", "n", {}], "invalid: NEG-OPEN takes"),
        (["NEG-OPEN", "x" * 65, {}, "61"], "invalid: subscription id longer"),
        (["NEG-MSG", "n", "61"], "closed: no open reconciliation 'n'"),
        (["NEG-MSG", "n"], "invalid: NEG-MSG takes"),
        (["NEG-CLOSE", "n", "extra"], "invalid: NEG-CLOSE takes"),
    ],
)
async def test_bad_messages_get_neg_err_and_the_connection_lives(
    relay: RelayProcess, message: list[Any], prefix: str
) -> None:
    async with connect(relay.url) as ws:
        await ws.send(message)
        answer = await neg_err(ws, message[1])
        assert answer[2].startswith(prefix), answer
        await alive(ws)


async def test_unknown_version_is_answered_with_ours_and_the_session_stays(
    relay: RelayProcess,
) -> None:
    async with connect(relay.url) as ws:
        await ws.send(["NEG-OPEN", "v", {"ids": ["00" * 32]}, "62"])
        assert await ws.receive() == ["NEG-MSG", "v", "61"]
        await ws.send(["NEG-MSG", "v", "61"])  # retried in version 1: an empty set matches
        assert await ws.receive() == ["NEG-MSG", "v", "61"]
        await ws.send(["NEG-CLOSE", "v"])
        await ws.send(["NEG-MSG", "v", "61"])
        assert (await neg_err(ws, "v"))[2].startswith("closed:")


async def test_a_bad_message_mid_session_ends_it(relay: RelayProcess) -> None:
    async with connect(relay.url) as ws:
        await ws.send(["NEG-OPEN", "m", {"ids": ["00" * 32]}, "61"])
        assert await ws.receive() == ["NEG-MSG", "m", "61"]
        await ws.send(["NEG-MSG", "m", "61ff"])
        assert (await neg_err(ws, "m"))[2].startswith("invalid:")
        await ws.send(["NEG-MSG", "m", "61"])
        assert (await neg_err(ws, "m"))[2].startswith("closed:")
        await alive(ws)


async def test_direct_messages_are_screened_as_for_count(relay: RelayProcess) -> None:
    """A filter that may match DMs covers them only for their participants; one that names a
    DM kind needs AUTH, as REQ does."""
    alice = Signer()
    note = alice.sign(1, "public")
    dm = alice.sign(4, "secret", [["p", Signer().pubkey]])
    async with connect(relay.url) as ws:
        for event in (note, dm):
            assert (await ws.publish(event))[2] is True
        difference = await reconcile(ws.ws, {"authors": [alice.pubkey]}, Storage.from_items([]))
        assert difference.need == [note.id]
        with pytest.raises(SyncError, match="auth-required"):
            await reconcile(ws.ws, {"kinds": [4]}, Storage.from_items([]))
        await alive(ws)


async def test_limits_answer_neg_err_and_the_connection_lives(start_relay: RelayStarter) -> None:
    relay = start_relay.start(
        workers=1,
        RELAY_NEGENTROPY__MAX_ITEMS="20",
        RELAY_NEGENTROPY__MAX_SESSIONS_PER_CONNECTION="2",
        RELAY_NEGENTROPY__MAX_WORKER_ITEMS="21",
        RELAY_NEGENTROPY__IDLE_TIMEOUT="3",
    )
    signer = Signer()
    now = int(time.time())
    events = [signer.sign(1, f"n{i}", created_at=now - i) for i in range(25)]
    ids = [event.id for event in events]

    async def opened(ws: RelayClient, sub_id: str, event_ids: list[str]) -> list[Any]:
        await ws.send(["NEG-OPEN", sub_id, {"ids": event_ids}, "61"])
        _, reply = await ws.receive_until(lambda m: m[0].startswith("NEG") and m[1] == sub_id)
        return reply

    async with connect(relay.url) as ws:
        for event in events:
            assert (await ws.publish(event))[2] is True
        await ws.send(["NEG-OPEN", "big", {"authors": [signer.pubkey]}, "61"])
        answer = await neg_err(ws, "big")
        assert answer[2].startswith("blocked: this query is too big") and answer[3] == 20
        # 20 + 1 items held: the worker's budget (21) is full; re-opening "a" replaces it.
        assert (await opened(ws, "w", ids[:20]))[0] == "NEG-MSG"
        assert (await opened(ws, "a", ids[:1]))[0] == "NEG-MSG"
        assert (await opened(ws, "a", ids[1:2]))[0] == "NEG-MSG"
        answer = await opened(ws, "c", ids[:1])
        assert answer[0] == "NEG-ERR" and answer[2].startswith("blocked: too many open")
        await ws.send(["NEG-CLOSE", "a"])
        answer = await opened(ws, "c", ids[:2])
        assert answer[0] == "NEG-ERR" and answer[2].startswith("rate-limited: relay busy")
        await ws.send(["NEG-CLOSE", "w"])
        assert (await opened(ws, "c", ids[:20]))[0] == "NEG-MSG"
        await alive(ws)
        # Idle reconciliations end with `closed:` after negentropy.idle_timeout.
        idle = await ws.receive(timeout=10)
        assert idle[:2] == ["NEG-ERR", "c"] and idle[2] == "closed: no NEG-MSG for 3 seconds"
        await ws.send(["NEG-MSG", "c", "61"])
        assert (await neg_err(ws, "c"))[2].startswith("closed: no open reconciliation")
        assert (await opened(ws, "d", ids[:20]))[0] == "NEG-MSG"  # its items were released
        await alive(ws)
