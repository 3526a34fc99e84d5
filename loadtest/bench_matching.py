"""Micro-benchmark of SubscriptionIndex.match: microseconds and candidates per event.

    .venv/bin/python loadtest/bench_matching.py [--events N] [--sizes 1000,10000,100000]

Builds an index per size with a realistic mix of filters (60% follow lists by author, 20% `#p`
mentions or `#e` threads, 15% kinds-only with since, 5% broad `since` filters), streams random
events through `match` and prints a markdown table. Authors, mentions and threads are drawn
from skewed (power-law-like) distributions, as on a real relay a few keys get most of the traffic.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from typing import Any

import msgspec

from cluster.nostr.event import Event
from cluster.nostr.filters import FilterLimits, parse_filter
from cluster.relay.subscriptions import Subscription, SubscriptionIndex

LIMITS = FilterLimits(max_limit=5000, default_limit=500, max_values=1000)
NOW = 1_700_000_000
PUBKEYS = 50_000  # the key universe
THREADS = 5_000  # recent event ids people reply to / watch
KIND_WEIGHTS = {1: 50, 7: 25, 6: 8, 9735: 4, 0: 3, 3: 3, 30023: 3, 10002: 2, 1984: 2}
FEED_KINDS = [[1], [1, 6], [1, 6, 7], [1, 30023], [0, 3, 10002]]
KIND_ONLY = [[1], [7], [0], [30023], [9735], [1, 6], [1984]]


class Sink:
    def deliver(self, subscription: Subscription, event: Event, event_json: bytes) -> None:
        pass


def skewed(rng: random.Random, size: int, power: float = 3.0) -> int:
    """Index in [0, size), low indices far more likely (popular keys, hot threads)."""
    return int(size * rng.random() ** power)


def pubkey(i: int) -> str:
    return f"{i:064x}"


def event_id(i: int) -> str:
    return f"{i + 10**9:064x}"


def random_filter(rng: random.Random) -> dict[str, Any]:
    roll = rng.random()
    if roll < 0.60:
        follows = {pubkey(skewed(rng, PUBKEYS)) for _ in range(rng.randint(1, 20))}
        raw: dict[str, Any] = {"authors": sorted(follows), "limit": 100}
        if rng.random() < 0.7:
            raw["kinds"] = rng.choice(FEED_KINDS)
        return raw
    if roll < 0.80:
        if rng.random() < 0.6:
            return {"#p": [pubkey(skewed(rng, PUBKEYS, 1.5))], "kinds": [1, 6, 7, 9735]}
        thread = [event_id(skewed(rng, THREADS)) for _ in range(rng.randint(1, 3))]
        return {"#e": thread, "kinds": [1, 7]}
    if roll < 0.95:
        return {"kinds": rng.choice(KIND_ONLY), "since": NOW - rng.randint(0, 3600), "limit": 50}
    return {"since": NOW - rng.randint(0, 60), "limit": 0}


def build_index(rng: random.Random, size: int) -> SubscriptionIndex:
    index = SubscriptionIndex()
    sink = Sink()
    for i in range(size):
        filters = (parse_filter(random_filter(rng), LIMITS),)
        index.add(Subscription(sink, f"s{i}", filters))
    return index


def random_event(rng: random.Random, serial: int) -> Event:
    kind = rng.choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()))[0]
    tags: list[list[str]] = []
    if kind in (1, 7, 6, 9735) and rng.random() < 0.6:
        tags.append(["e", event_id(skewed(rng, THREADS)), "", "reply"])
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
        tags.append(["p", pubkey(skewed(rng, PUBKEYS, 1.5))])
    if rng.random() < 0.2:
        tags.append(["t", rng.choice(["nostr", "bitcoin", "art", "news"])])
    if kind == 30023:
        tags.append(["d", f"article-{serial}"])
    return Event(
        id=f"{serial:064x}",
        pubkey=pubkey(skewed(rng, PUBKEYS)),
        created_at=NOW + rng.randint(0, 60),
        kind=kind,
        tags=tags,
        content="",
        sig="00" * 64,
    )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class MatchingRow(msgspec.Struct, kw_only=True):
    """Cost of `SubscriptionIndex.match` per event with `size` subscriptions indexed."""

    size: int
    broad: int
    build_s: float
    events: int
    mean_us: float
    p95_us: float
    mean_candidates: float
    p95_candidates: float
    mean_matched: float


def bench(size: int, events: int, seed: int) -> MatchingRow:
    rng = random.Random(seed)
    started = time.perf_counter()
    index = build_index(rng, size)
    build_s = time.perf_counter() - started
    stream = [random_event(rng, serial) for serial in range(events)]
    for event in stream[:50]:  # warm-up
        index.match(event)

    timings: list[float] = []
    matched: list[int] = []
    gc.disable()
    try:
        for event in stream:
            t0 = time.perf_counter_ns()
            result = index.match(event)
            timings.append((time.perf_counter_ns() - t0) / 1000)
            matched.append(len(result))
    finally:
        gc.enable()
    candidates = [len(index.candidates(event)) for event in stream]
    return MatchingRow(
        size=size,
        broad=index.broad_count,
        build_s=build_s,
        events=events,
        mean_us=statistics.fmean(timings),
        p95_us=percentile(timings, 0.95),
        mean_candidates=statistics.fmean(candidates),
        p95_candidates=percentile([float(c) for c in candidates], 0.95),
        mean_matched=statistics.fmean(matched),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=2000, help="events streamed per size")
    parser.add_argument("--sizes", default="1000,10000,100000", help="subscription counts")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    started = time.perf_counter()
    rows = [bench(int(size), args.events, args.seed) for size in args.sizes.split(",")]
    print(
        "| subscriptions | broad | build s | events | match mean µs | match p95 µs"
        " | candidates mean | candidates p95 | matched mean |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row.size:,} | {row.broad:,} | {row.build_s:.1f} | {row.events:,}"
            f" | {row.mean_us:.1f} | {row.p95_us:.1f} | {row.mean_candidates:.0f}"
            f" | {row.p95_candidates:.0f} | {row.mean_matched:.1f} |"
        )
    print(f"\nPython {sys.version.split()[0]}, total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
