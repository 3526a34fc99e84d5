"""Channel state, cached: L1 in process, L2 Redis, L3 the Dassie node (the truth).

A cache only makes a check faster: the amounts and nonces a claim may spend are decided by the
conditional update in PostgreSQL, never by a cached state. Redis failing means going straight
to the node; the node failing means using a recent enough cached state, or failing closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cluster import metrics
from cluster.payments.dassie import DassieUnavailable
from cluster.payments.model import ChannelState

log = logging.getLogger(__name__)

NEGATIVE_TTL = 5.0
L1_CAPACITY = 10_000
"""Channel states one worker keeps in memory at most: the least recently used go first, so
claims naming endless made-up channels cannot grow a worker's memory."""


class PaymentUnavailable(RuntimeError):
    """No usable channel state: the node is unreachable and nothing recent enough is cached."""


class ChannelSource(Protocol):
    """Where the truth comes from (the Dassie client; a fake in unit tests)."""

    async def get_channel_state(self, channel_id: str) -> ChannelState | None: ...


class ChannelLookup(msgspec.Struct, frozen=True):
    state: ChannelState | None  # None: the node does not know this channel
    from_cache: bool


class _Entry(msgspec.Struct):
    state: ChannelState | None
    fetched_at: float


def channel_key(prefix: str, channel_id: str) -> str:
    return f"{prefix}channel:{channel_id}"


def _count(level: str, result: str) -> None:
    metrics.CHANNEL_CACHE.labels(level, result).inc()


class ChannelStateCache:
    def __init__(
        self,
        node: ChannelSource,
        redis: aioredis.Redis | None,
        *,
        prefix: str,
        ttl: float,
        stale_grace: float,
        clock: Callable[[], float] = time.monotonic,
        capacity: int = L1_CAPACITY,
    ) -> None:
        self._node = node
        self._capacity = capacity
        self._clock = clock
        self._redis = redis
        self._prefix = prefix
        self._ttl = ttl
        self._stale_grace = stale_grace
        self._l1: OrderedDict[str, _Entry] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[ChannelState | None]] = {}

    async def get(self, channel_id: str, *, fresh: bool = False) -> ChannelLookup:
        """The channel's state from the nearest level that has it; fresh=True asks the node."""
        now = self._clock()
        entry = self._l1.get(channel_id)
        if entry is not None:
            self._l1.move_to_end(channel_id)
        if not fresh:
            if entry is not None:
                ttl = self._ttl if entry.state is not None else NEGATIVE_TTL
                if now - entry.fetched_at < ttl:
                    _count("l1", "hit")
                    return ChannelLookup(entry.state, from_cache=True)
            _count("l1", "miss")
            if self._redis is not None:
                cached = await self._from_redis(channel_id)
                _count("l2", "miss" if cached is None else "hit")
                if cached is not None:
                    self._remember(channel_id, _Entry(cached, now))
                    return ChannelLookup(cached, from_cache=True)
        try:
            state = await self._fetch_once(channel_id)
        except DassieUnavailable as exc:
            _count("l3", "miss")
            if (
                entry is not None
                and entry.state is not None
                and now - entry.fetched_at < self._stale_grace
            ):
                _count("l1", "stale")
                return ChannelLookup(entry.state, from_cache=True)
            raise PaymentUnavailable(str(exc)) from exc
        _count("l3", "hit")
        self._remember(channel_id, _Entry(state, now))
        if state is not None:
            await self._to_redis(state)
        return ChannelLookup(state, from_cache=False)

    def _remember(self, channel_id: str, entry: _Entry) -> None:
        self._l1[channel_id] = entry
        self._l1.move_to_end(channel_id)
        while len(self._l1) > self._capacity:
            self._l1.popitem(last=False)

    def __len__(self) -> int:
        return len(self._l1)

    async def _fetch_once(self, channel_id: str) -> ChannelState | None:
        """One node request per channel at a time: concurrent misses share its answer (a
        burst of claims on a cold channel must not become a burst of node requests)."""
        pending = self._inflight.get(channel_id)
        if pending is None:
            pending = asyncio.ensure_future(self._node.get_channel_state(channel_id))
            self._inflight[channel_id] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(channel_id, None))
        return await asyncio.shield(pending)

    async def _from_redis(self, channel_id: str) -> ChannelState | None:
        if self._redis is None:
            return None
        try:
            raw = await self._redis.get(channel_key(self._prefix, channel_id))
        except (RedisError, OSError) as exc:
            log.debug("L2 channel cache unavailable: %s", exc)
            return None
        if raw is None:
            return None
        try:
            return msgspec.json.decode(raw, type=ChannelState)
        except msgspec.MsgspecError:
            return None

    async def _to_redis(self, state: ChannelState) -> None:
        if self._redis is None:
            return
        try:
            await self._redis.set(
                channel_key(self._prefix, state.channel_id),
                msgspec.json.encode(state),
                ex=max(1, int(self._ttl)),
            )
        except (RedisError, OSError) as exc:
            log.debug("L2 channel cache unavailable: %s", exc)
