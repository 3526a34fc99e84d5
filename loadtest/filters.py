"""The REQ filters the load tools send: common query shapes and never-matching idle ones."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from loadtest.files import FillManifest

FilterJson = dict[str, list[str | int] | int]
"""A NIP-01 filter as sent on the wire (lists of hex strings or kinds; limit, since, until)."""

HASHTAGS = [
    "nostr", "bitcoin", "art", "news", "music", "photography", "zap", "dev", "grownostr",
    "plebchain", "food", "travel", "books", "memes", "science", "sports", "privacy", "linux",
    "coffee", "gm",
]  # fmt: skip

QUERY_SHAPES = (
    "author_recent",
    "author_kind",
    "follow_feed",
    "kind_recent",
    "thread_replies",
    "mentions",
    "hashtag",
    "ids",
    "time_window",
)


def make_filter(shape: str, manifest: FillManifest | None, rng: random.Random) -> FilterJson:
    """One filter of a common shape, with values drawn from the fill manifest when given."""
    manifest = manifest or FillManifest()

    def pick(values: list[str], fallback: Callable[[], str], skew: float = 2.0) -> str:
        if not values:
            return fallback()
        return str(values[int(len(values) * rng.random() ** skew)])

    def random_hex() -> str:
        return rng.randbytes(32).hex()

    now = int(time.time())
    t_min = manifest.time_min if manifest.time_min is not None else now - 3600
    t_max = manifest.time_max if manifest.time_max is not None else now
    if shape == "author_recent":
        return {"authors": [pick(manifest.authors, random_hex)], "limit": 20}
    if shape == "author_kind":
        return {"authors": [pick(manifest.authors, random_hex)], "kinds": [1], "limit": 20}
    if shape == "follow_feed":
        follows: list[str | int] = sorted(
            {pick(manifest.authors, random_hex, 1.5) for _ in range(20)}
        )
        return {"authors": follows, "kinds": [1, 6], "limit": 50}
    if shape == "kind_recent":
        return {"kinds": [rng.choice([1, 7, 6])], "limit": 20}
    if shape == "thread_replies":
        return {"#e": [pick(manifest.e_targets, random_hex)], "kinds": [1, 7], "limit": 50}
    if shape == "mentions":
        return {"#p": [pick(manifest.p_targets, random_hex)], "limit": 20}
    if shape == "hashtag":
        tags = manifest.hashtags or HASHTAGS
        return {"#t": [tags[int(len(tags) * rng.random() ** 2)]], "kinds": [1], "limit": 20}
    if shape == "ids":
        ids: list[str | int] = sorted({pick(manifest.event_ids, random_hex, 1.0) for _ in range(5)})
        return {"ids": ids}
    if shape == "time_window":
        since = rng.randint(t_min, max(t_min, t_max - 600))
        return {"since": since, "until": since + 600, "limit": 50}
    raise ValueError(f"unknown query shape {shape!r} (one of {', '.join(QUERY_SHAPES)})")


def idle_filter(rng: random.Random, index: int) -> FilterJson:
    """Realistic subscriptions that the scenario's own events never match: follow lists,
    mentions, threads and kinds, all on keys that are not in use (so matching is exercised
    through the index but delivers nothing)."""
    roll = index % 20
    if roll < 12:
        authors: list[str | int] = sorted(
            {rng.randbytes(32).hex() for _ in range(rng.randint(1, 20))}
        )
        return {"authors": authors, "kinds": [1, 6, 7], "limit": 0}
    if roll < 16:
        return {"#p": [rng.randbytes(32).hex()], "kinds": [1, 7, 9735], "limit": 0}
    if roll < 19:
        return {"#e": [rng.randbytes(32).hex() for _ in range(rng.randint(1, 3))], "limit": 0}
    return {"kinds": [rng.randint(20000, 29999)], "limit": 0}  # ephemeral kinds nobody sends
