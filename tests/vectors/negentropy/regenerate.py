"""Regenerate vectors.json: negentropy known answers computed by nostr-tools 2.25.2 (nip77.js).

    .venv/bin/python tests/vectors/negentropy/regenerate.py

The item sets are drawn here from a fixed seed; every expected value (fingerprints, messages,
have/need ids) is computed by nostr-tools in node, never by our code, and checked by
tests/unit/nostr/test_negentropy_vectors.py. nostr-tools plays one reconciliation role for
every message (it has no client/server distinction), so the vectors cover only what it does as
the reference does: fingerprints, `initiate`, the server's first reply to a fingerprint-only
message, and the client's processing of that reply (have, need and its next message).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from tests.nodejs import run_node  # noqa: E402

OUT = Path(__file__).with_name("vectors.json")
SEED = 77

SCRIPT = r"""
import {Negentropy, NegentropyStorageVector} from './node_modules/nostr-tools/lib/esm/nip77.js'
import {bytesToHex} from './node_modules/@noble/hashes/utils.js'

const input = JSON.parse(fs.readFileSync(0, 'utf8'))

function storageOf(items) {
  const s = new NegentropyStorageVector()
  for (const [ts, id] of items) s.insert(ts, id)
  s.seal()
  return s
}

const out = {fingerprints: [], initiate: [], exchanges: []}
for (const c of input.fingerprints) {
  const s = storageOf(c.items)
  out.fingerprints.push({...c, expected: c.ranges.map(([a, b]) => bytesToHex(s.fingerprint(a, b)))})
}
for (const c of input.initiate) {
  out.initiate.push({...c, message: new Negentropy(storageOf(c.items), c.frame).initiate()})
}
for (const c of input.exchanges) {
  const client = new Negentropy(storageOf(c.client), c.frame)
  const server = new Negentropy(storageOf(c.server), c.frame)
  const query = client.initiate()
  // nostr-tools returns null where the reference server sends its bare version byte
  const reply = server.reconcile(query) ?? '61'
  const have = [], need = []
  const next = client.reconcile(reply, id => have.push(id), id => need.push(id))
  out.exchanges.push({...c, query, reply, next, have: have.sort(), need: need.sort()})
}
process.stdout.write(JSON.stringify(out))
"""


def items(rnd: random.Random, count: int, spread: int) -> list[list[Any]]:
    """Timestamps from a narrow window, so many items share one and bounds need id prefixes."""
    return [[1_700_000_000 + rnd.randrange(spread), rnd.randbytes(32).hex()] for _ in range(count)]


def pair(rnd: random.Random, shared: int, only_client: int, only_server: int, spread: int) -> Any:
    common = items(rnd, shared, spread)
    client = common + items(rnd, only_client, spread)
    server = common + items(rnd, only_server, spread)
    rnd.shuffle(client)
    rnd.shuffle(server)
    return client, server


def cases() -> dict[str, Any]:
    rnd = random.Random(SEED)
    fingerprints = []
    for count in (0, 1, 2, 17, 300):
        ranges = [[0, count], [0, 0]]
        ranges += [sorted([rnd.randrange(count + 1), rnd.randrange(count + 1)]) for _ in range(6)]
        fingerprints.append({"items": items(rnd, count, 50), "ranges": ranges})
    initiate = [
        {"items": items(rnd, count, spread), "frame": 60000}
        for count, spread in ((0, 1), (1, 1), (5, 3), (31, 10), (32, 10), (33, 2), (200, 4))
    ]
    exchanges = []
    for shared, only_client, only_server, spread, frame in (
        (40, 0, 0, 100, 60000),  # equal sets: the server answers with a bare version byte
        (40, 3, 0, 100, 60000),
        (40, 0, 3, 100, 60000),
        (200, 5, 7, 20, 60000),
        (400, 2, 30, 3, 60000),  # many ties: bounds with id prefixes
        (500, 20, 20, 1500, 60000),
        (60, 0, 40, 1_000_000, 10**9),  # no frame limit in effect
    ):
        client, server = pair(rnd, shared, only_client, only_server, spread)
        exchanges.append({"client": client, "server": server, "frame": frame})
    return {"fingerprints": fingerprints, "initiate": initiate, "exchanges": exchanges}


def main() -> None:
    script = "import fs from 'node:fs'\n" + SCRIPT
    result = json.loads(run_node(script, json.dumps(cases()).encode()))
    result["generator"] = (
        "nostr-tools 2.25.2 lib/esm/nip77.js, via tests/vectors/negentropy/regenerate.py"
    )
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
