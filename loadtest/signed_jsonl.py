"""A signed JSON-lines file for `relay-cluster import`: what the bench imports, and the profile.

    .venv/bin/python -m loadtest.signed_jsonl --events 100000 --output /tmp/events.jsonl

The mix is a relay's: 96% regular events (notes with a hashtag, reactions to earlier notes), 3%
replaceable and addressable ones (profiles, follow lists, long-form articles that later lines
replace) and 1% NIP-09 deletions of earlier notes of the same author, from 1,000 authors, in
created_at order. Signing goes through a process pool (Signer: the keypair built once per
author), 2,000 events per task, so 100,000 events take seconds rather than a minute.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from cluster.nostr.event import encode_event
from cluster.nostr.signing import Signer
from loadtest.presign import secret_for

AUTHORS = 1_000
CHUNK = 2_000


def _chunk(args: tuple[str, int, int, int]) -> bytes:
    """Lines first .. first + count - 1 of the file (deterministic per seed and line)."""
    seed, first, count, start = args
    signers: dict[int, Signer] = {}
    out = bytearray()
    for line in range(first, first + count):
        rnd = random.Random(f"{seed}:{line}")
        author = rnd.randrange(AUTHORS)
        signer = signers.get(author) or signers.setdefault(author, Signer(secret_for(seed, author)))
        created_at = start + line
        roll = line % 100
        # An earlier note of this line's author: line - 100k for the same author does not
        # exist in general, so reactions and deletions point at a note line of any author.
        target_line = max(0, line - 1 - rnd.randrange(min(line, 5_000) or 1))
        target = _note_id(seed, target_line, start)
        if roll < 70:
            event = signer.sign(1, f"note {line} {rnd.random():.6f}", [["t", f"t{line % 50}"]],
                                created_at)  # fmt: skip
        elif roll < 96:
            event = signer.sign(7, "+", [["e", target], ["p", signer.pubkey]], created_at)
        elif roll < 97:
            event = signer.sign(0, f'{{"name":"a{author}","line":{line}}}', [], created_at)
        elif roll < 98:
            follows = [["p", secret_for(seed, (author + k) % AUTHORS)[:64]] for k in range(20)]
            event = signer.sign(3, "", follows, created_at)
        elif roll < 99:
            tags = [["d", f"article-{author % 7}"], ["title", f"line {line}"]]
            event = signer.sign(30023, f"article at line {line}", tags, created_at)
        else:
            event = signer.sign(5, "", [["e", target]], created_at)
        out += encode_event(event)
        out += b"\n"
    return bytes(out)


def _note_id(seed: str, line: int, start: int) -> str:
    """A plausible target id (not necessarily stored: a NIP-09 deletion of an unknown id is
    kept as a tombstone, a reaction to one is stored like any other)."""
    return secret_for(f"{seed}:note", line - line % 100 + start % 7)


def write_signed_jsonl(path: Path, events: int, *, seed: str = "import", processes: int = 0) -> int:
    """Write `events` signed lines to `path`; returns the bytes written."""
    start = int(time.time()) - events - 3600
    tasks = [(seed, first, min(CHUNK, events - first), start) for first in range(0, events, CHUNK)]
    processes = processes or min(2, os.cpu_count() or 1)
    written = 0
    with (
        path.open("wb") as handle,
        ProcessPoolExecutor(max_workers=processes, mp_context=get_context("spawn")) as pool,
    ):
        for block in pool.map(_chunk, tasks):
            handle.write(block)
            written += len(block)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--output", required=True)
    parser.add_argument("--seed", default="import")
    args = parser.parse_args()
    started = time.monotonic()
    size = write_signed_jsonl(Path(args.output), args.events, seed=args.seed)
    print(f"{args.events:,} events, {size / 1e6:.1f} MB in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
