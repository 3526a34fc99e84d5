"""Benchmark of NIP-77 reconciliation in memory: seconds to reconcile two sets differing by 1%.

    .venv/bin/python loadtest/bench_negentropy.py [--sizes 10000,100000,1000000] [--frame 60000]

For each size N, two sets of N items share 99% (each side holds N/100 items the other lacks),
timestamps spread over N seconds. Both sides are cluster/nostr/negentropy.py: the client
initiates, the server answers, until the client has every difference; the exchange is checked
against the true difference. Printed per size: building both storages (sort + prefix sums),
the reconciliation with the frame size limit given (the relay's default, 60,000 bytes), and
with none (0), with the rounds and bytes exchanged. Figures are in docs/SYNC.md.
"""

from __future__ import annotations

import argparse
import random
import time

import msgspec

from cluster.nostr.negentropy import Negentropy, Storage

BASE_TIMESTAMP = 1_700_000_000


class Exchange(msgspec.Struct, frozen=True):
    seconds: float
    rounds: int
    bytes: int


class Row(msgspec.Struct, frozen=True):
    size: int
    build_seconds: float
    framed: Exchange
    unframed: Exchange


def make_sets(size: int, seed: int) -> tuple[list[tuple[int, bytes]], ...]:
    rnd = random.Random(seed)

    def items(count: int) -> list[tuple[int, bytes]]:
        return [(BASE_TIMESTAMP + rnd.randrange(size), rnd.randbytes(32)) for _ in range(count)]

    differing = size // 100
    shared = items(size - differing)
    return shared, items(differing), items(differing)


def exchange(client_side: Storage, server_side: Storage, frame: int, have: int) -> Exchange:
    started = time.perf_counter()
    client = Negentropy(client_side, frame)
    server = Negentropy(server_side, frame)
    message: bytes | None = client.initiate()
    rounds = total = found_have = found_need = 0
    while message is not None:
        reply = server.reconcile(message)
        step = client.client_reconcile(reply)
        rounds += 1
        total += len(message) + len(reply)
        found_have += len(step.have)
        found_need += len(step.need)
        message = step.message
    seconds = time.perf_counter() - started
    if found_have != have or found_need != have:
        raise AssertionError(f"found {found_have}/{found_need} differences, expected {have}")
    return Exchange(seconds, rounds, total)


def bench(size: int, frame: int, seed: int) -> Row:
    shared, only_client, only_server = make_sets(size, seed)
    started = time.perf_counter()
    client_side = Storage.from_items(shared + only_client)
    server_side = Storage.from_items(shared + only_server)
    build = time.perf_counter() - started
    framed = exchange(client_side, server_side, frame, len(only_client))
    unframed = exchange(client_side, server_side, 0, len(only_client))
    return Row(size, build, framed, unframed)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="items per side")
    parser.add_argument("--frame", type=int, default=60_000, help="frame size limit (bytes)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(
        f"| items per side | differing | build both (s) | reconcile, frame {args.frame} (s)"
        " | rounds | MB exchanged | reconcile, no frame limit (s) | rounds |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in (int(size) for size in args.sizes.split(",")):
        row = bench(size, args.frame, args.seed)
        print(
            f"| {row.size:,} | {2 * (row.size // 100):,} | {row.build_seconds:.2f}"
            f" | {row.framed.seconds:.2f} | {row.framed.rounds} | {row.framed.bytes / 1e6:.1f}"
            f" | {row.unframed.seconds:.2f} | {row.unframed.rounds} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
