"""Cluster-wide rate limits and connection counts in Redis, with a per-worker fallback.

Every worker of every instance counts in the same Redis keys, so a client gets one budget
however nginx spreads its connections. When Redis fails, each worker switches to an in-memory
token bucket holding the limit divided by `fallback_workers` (neither failing open nor closed
for everyone) and tries Redis again after `retry_after` seconds.

Redis keys (to move into cluster/bus/constants.py):
  <prefix>rl:<scope>:<subject>:<window_seconds>:<window index>   sliding-window counters
  <prefix>rl:conn:<ip>                                           open connections per IP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from cluster.bus.redis_clients import redis_from_settings
from cluster.config import RedisSettings
from cluster.relay.local_limits import DenialMemory, TokenBuckets, denial_hold

log = logging.getLogger(__name__)

Clock = Callable[[], float]

# ---- Redis keys and scripts -------------------------------------------------------------------


def window_key(prefix: str, scope: str, subject: str, window_seconds: int, index: int) -> str:
    return f"{prefix}rl:{scope}:{subject}:{window_seconds}:{index}"


def connections_key(prefix: str, ip: str) -> str:
    return f"{prefix}rl:conn:{ip}"


# Sliding-window counter (the weighted sum of this and the previous fixed window), atomic.
# A refused request is not counted, so a flooding client regains its budget as time passes.
_SLIDING_WINDOW = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
if math.floor(previous * tonumber(ARGV[2])) + current >= tonumber(ARGV[1]) then
  return 0
end
if redis.call('INCR', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
"""

# Connections: count up unless at the limit; the TTL is refreshed on every change so a key
# leaked by a crashed worker disappears once the IP has been quiet for `ttl`.
_ACQUIRE = """
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if n > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return 0
end
return 1
"""

_RELEASE = """
local n = redis.call('DECR', KEYS[1])
if n <= 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
"""


def redis_client(url: RedisSettings | str, timeout: float = 0.25) -> aioredis.Redis:
    """A client for limits: short timeouts and no retries, so a dead Redis costs one timeout
    before the fallback takes over (redis-py's default retries for seconds)."""
    return redis_from_settings(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def fallback_limit(limit: int, fallback_workers: int) -> int:
    """One worker's share of a cluster-wide limit; at least 1, so nobody is locked out."""
    return max(1, limit // max(1, fallback_workers))


class _RedisBreaker:
    """After a Redis failure, skip Redis for `retry_after` seconds instead of paying a timeout
    on every call; then the next call tries Redis again."""

    def __init__(self, retry_after: float, clock: Clock) -> None:
        self.retry_after = retry_after
        self.clock = clock
        self._retry_at: float | None = None
        self._down = False
        self.failures = 0

    @property
    def open(self) -> bool:
        if self._retry_at is None:
            return False
        now = self.clock()
        # A wall clock stepping backwards must not keep Redis skipped for longer than intended.
        if now >= self._retry_at or self._retry_at - now > self.retry_after:
            self._retry_at = None
            return False
        return True

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        if not self._down:
            log.warning("rate limits: Redis unavailable (%s); using per-worker fallback", exc)
            self._down = True
        self._retry_at = self.clock() + self.retry_after

    def succeeded(self) -> None:
        if self._down:
            log.info("rate limits: Redis is back; cluster-wide limits again")
            self._down = False
        self._retry_at = None


# ---- the limiter ------------------------------------------------------------------------------


class RateLimiter:
    """`allow(scope, subject, limit, window)`: a sliding window shared by the whole cluster."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str,
        fallback_workers: int,
        retry_after: float = 2.0,
        clock: Clock = time.time,
        max_fallback_entries: int = 100_000,
    ) -> None:
        self._redis = redis
        self._script = redis.register_script(_SLIDING_WINDOW)
        self._prefix = prefix
        self._fallback_workers = fallback_workers
        self._clock = clock
        self._breaker = _RedisBreaker(retry_after, clock)
        self._local = TokenBuckets(max_fallback_entries)
        self._denied = DenialMemory(max_fallback_entries)
        self.decisions: dict[str, int] = {
            "redis_allowed": 0,
            "redis_denied": 0,
            "remembered_denied": 0,
            "fallback_allowed": 0,
            "fallback_denied": 0,
        }

    @property
    def using_fallback(self) -> bool:
        """True while Redis is being skipped after a failure."""
        return self._breaker.open

    async def allow(self, scope: str, subject: str, limit: int, window_seconds: int) -> bool:
        """Count one action of `subject` in `scope`; False once `limit` per window is spent.

        `limit` <= 0 means unlimited. Refused actions are not counted.
        """
        if limit <= 0:
            return True
        window_seconds = max(1, window_seconds)
        now = self._clock()
        key = f"{scope}:{subject}:{window_seconds}"
        if self._denied.holds(key, now):
            self.decisions["remembered_denied"] += 1
            return False
        if not self._breaker.open:
            try:
                allowed = await self._allow_redis(scope, subject, limit, window_seconds, now)
            except (RedisError, OSError) as exc:
                self._breaker.failed(exc)
            else:
                self._breaker.succeeded()
                self.decisions["redis_allowed" if allowed else "redis_denied"] += 1
                if not allowed:
                    self._denied.remember(key, now + denial_hold(window_seconds))
                return allowed
        local_limit = fallback_limit(limit, self._fallback_workers)
        allowed = self._local.take(key, local_limit, window_seconds, now)
        self.decisions["fallback_allowed" if allowed else "fallback_denied"] += 1
        return allowed

    async def _allow_redis(
        self, scope: str, subject: str, limit: int, window_seconds: int, now: float
    ) -> bool:
        index, offset = divmod(now, window_seconds)
        previous_weight = 1.0 - offset / window_seconds
        current = window_key(self._prefix, scope, subject, window_seconds, int(index))
        previous = window_key(self._prefix, scope, subject, window_seconds, int(index) - 1)
        result = await self._script(
            keys=[current, previous],
            args=[limit, f"{previous_weight:.6f}", window_seconds * 2000],
        )
        return bool(result)


# ---- connections per IP -----------------------------------------------------------------------


class ConnectionLease(msgspec.Struct, frozen=True):
    """One counted connection; give it back to `ConnectionCounter.release` exactly once."""

    ip: str
    where: Literal["redis", "local", "unlimited"]


class ConnectionCounter:
    """Open connections per client IP, counted cluster-wide in Redis (per worker on failure).

    A lease remembers where it was counted, so a connection opened while Redis was down is
    released locally, and one counted in Redis is released there (if Redis is down by then,
    the key's TTL cleans up).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str,
        limit: int,
        fallback_workers: int,
        ttl_seconds: int = 3600,
        retry_after: float = 2.0,
        clock: Clock = time.time,
    ) -> None:
        self._redis = redis
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)
        self._prefix = prefix
        self._limit = limit
        self._local_limit = fallback_limit(limit, fallback_workers)
        self._ttl_ms = max(1, ttl_seconds) * 1000
        self._breaker = _RedisBreaker(retry_after, clock)
        self._local: dict[str, int] = {}

    @property
    def using_fallback(self) -> bool:
        return self._breaker.open

    def local_count(self, ip: str) -> int:
        """Connections of `ip` this worker counted in memory (while Redis was down)."""
        return self._local.get(ip, 0)

    async def acquire(self, ip: str) -> ConnectionLease | None:
        """A lease for one more connection from `ip`, or None when it is at its limit."""
        if self._limit <= 0:
            return ConnectionLease(ip, "unlimited")
        if not self._breaker.open:
            try:
                result = await self._acquire(
                    keys=[connections_key(self._prefix, ip)], args=[self._limit, self._ttl_ms]
                )
            except (RedisError, OSError) as exc:
                self._breaker.failed(exc)
            else:
                self._breaker.succeeded()
                return ConnectionLease(ip, "redis") if result else None
        count = self._local.get(ip, 0)
        if count >= self._local_limit:
            return None
        self._local[ip] = count + 1
        return ConnectionLease(ip, "local")

    async def release(self, lease: ConnectionLease) -> None:
        """Give back the lease's connection; never raises (a Redis failure leaves it to TTL)."""
        if lease.where == "local":
            count = self._local.get(lease.ip, 0) - 1
            if count > 0:
                self._local[lease.ip] = count
            else:
                self._local.pop(lease.ip, None)
        elif lease.where == "redis" and not self._breaker.open:
            try:
                await self._release(
                    keys=[connections_key(self._prefix, lease.ip)], args=[self._ttl_ms]
                )
            except (RedisError, OSError) as exc:
                self._breaker.failed(exc)
