"""Per-worker memory for rate limits: token buckets (the fallback while Redis is down, and the
per-address budgets of cluster/relay/budgets.py) and remembered refusals.

Both are bounded by a number of keys, the least recently used forgotten first, so an attacker
cycling through subjects costs memory up to the cap and no more.
"""

from __future__ import annotations

from collections import OrderedDict


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class TokenBuckets:
    """Per-worker token buckets, one per key, least recently used forgotten beyond a cap.

    A forgotten key starts again with a full bucket: the cap bounds memory, not fairness.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._max_entries = max_entries

    def take(
        self, key: str, capacity: float, window_seconds: float, now: float, cost: float = 1.0
    ) -> bool:
        """Take `cost` tokens from `key`'s bucket (refilled at capacity per window)."""
        bucket = self._refilled(key, capacity, window_seconds, now)
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return True
        return False

    def seconds_until(
        self, key: str, capacity: float, window_seconds: float, now: float, cost: float = 1.0
    ) -> float:
        """0.0 after taking `cost` tokens; else how long until the bucket holds them (nothing
        taken: the caller waits, then asks again). A cost above the capacity waits for a full
        bucket and then takes it all."""
        bucket = self._refilled(key, capacity, window_seconds, now)
        needed = min(cost, float(capacity))
        if bucket.tokens >= needed:
            bucket.tokens -= needed
            return 0.0
        return (needed - bucket.tokens) * window_seconds / capacity

    def spend(
        self, key: str, capacity: float, window_seconds: float, now: float, cost: float
    ) -> None:
        """Take `cost` tokens even into debt: work priced after it was done (a debt delays
        the key's next `take` until the refill has paid it back)."""
        self._refilled(key, capacity, window_seconds, now).tokens -= cost

    def _refilled(self, key: str, capacity: float, window_seconds: float, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(capacity), now)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max_entries:
                self._buckets.popitem(last=False)
            return bucket
        self._buckets.move_to_end(key)
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(float(capacity), bucket.tokens + elapsed * capacity / window_seconds)
        bucket.updated = now
        return bucket

    def __len__(self) -> int:
        return len(self._buckets)


def denial_hold(window_seconds: int) -> float:
    """How long a refusal from Redis is remembered: a sixtieth of the window, at most a second.

    A client over its limit usually keeps sending; asking Redis again for each of its messages
    made the flood cost a round trip (and Redis CPU) per message, paid by every other client.
    The sliding window refills by a sixtieth of the limit in this time at most, so the client
    waits that much longer for its next allowed action, never more than a second."""
    return min(1.0, window_seconds / 60)


class DenialMemory:
    """Keys refused until a time; bounded (the oldest forgotten first: it is then asked again)."""

    def __init__(self, max_entries: int) -> None:
        self._until: OrderedDict[str, float] = OrderedDict()
        self._max_entries = max_entries

    def holds(self, key: str, now: float) -> bool:
        until = self._until.get(key)
        if until is None:
            return False
        if now < until:
            return True
        del self._until[key]
        return False

    def remember(self, key: str, until: float) -> None:
        self._until[key] = until
        self._until.move_to_end(key)
        if len(self._until) > self._max_entries:
            self._until.popitem(last=False)
