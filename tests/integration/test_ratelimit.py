"""Cluster-wide rate limits against a real Redis: a shared budget across workers, and the
per-worker fallback when Redis dies. Time is a fake clock, so nothing here depends on timing.
The pure helpers (client_ip, token buckets, settings) are tested at the end."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest
import redis.asyncio as aioredis

from cluster.config import RateLimitSettings
from cluster.relay.addresses import client_ip, subject_of_ip
from cluster.relay.local_limits import DenialMemory, TokenBuckets, denial_hold
from cluster.relay.ratelimit import (
    ConnectionCounter,
    RateLimiter,
    connections_key,
    fallback_limit,
    redis_client,
)
from cluster.services.ports import free_port
from cluster.services.redis import RedisServer
from tests.services import unique_name

START = 1_700_000_040.0  # a multiple of 60: the first instant of a one-minute window
PK = "ab" * 32


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def prefix() -> str:
    return unique_name("rl") + ":"


@pytest.fixture
async def clients(redis_url: str, prefix: str) -> AsyncIterator[list[aioredis.Redis]]:
    """Two separate clients (two workers' connection pools); the test's keys removed after."""
    pair = [redis_client(redis_url), redis_client(redis_url)]
    try:
        yield pair
    finally:
        keys = [key async for key in pair[0].scan_iter(match=f"{prefix}*")]
        if keys:
            await pair[0].delete(*keys)
        for client in pair:
            await client.aclose()


async def allowed(
    limiter: RateLimiter, times: int, subject: str = "1.2.3.4", limit: int = 10
) -> int:
    results = [await limiter.allow("events", subject, limit, 60) for _ in range(times)]
    return sum(results)


# ---- shared budget ----------------------------------------------------------------------------


async def test_two_workers_share_one_budget(clients: list[aioredis.Redis], prefix: str) -> None:
    clock = FakeClock()
    first = RateLimiter(clients[0], prefix=prefix, fallback_workers=4, clock=clock)
    second = RateLimiter(clients[1], prefix=prefix, fallback_workers=4, clock=clock)
    assert await allowed(first, 6) == 6
    assert await allowed(second, 10) == 4
    assert await allowed(first, 3) == 0
    assert first.decisions == {
        "redis_allowed": 6,
        "redis_denied": 1,
        "remembered_denied": 2,  # the refusal is remembered for a moment: no round trip
        "fallback_allowed": 0,
        "fallback_denied": 0,
    }
    assert not first.using_fallback and not second.using_fallback


async def test_subjects_scopes_and_windows_are_separate(
    clients: list[aioredis.Redis], prefix: str
) -> None:
    limiter = RateLimiter(clients[0], prefix=prefix, fallback_workers=4, clock=FakeClock())
    assert await allowed(limiter, 12) == 10
    assert await allowed(limiter, 12, subject="5.6.7.8") == 10
    assert await limiter.allow("reqs", "1.2.3.4", 10, 60)
    assert await limiter.allow("events", "1.2.3.4", 10, 3600)  # another window length
    keys = [key.decode() async for key in clients[0].scan_iter(match=f"{prefix}*")]
    assert len(keys) == 4
    assert all(key.startswith(f"{prefix}rl:") for key in keys)
    assert f"{prefix}rl:events:1.2.3.4:60:{int(START // 60)}" in keys
    assert all([await clients[0].pttl(key) > 0 for key in keys])


async def test_the_window_slides(clients: list[aioredis.Redis], prefix: str) -> None:
    clock = FakeClock()
    limiter = RateLimiter(clients[0], prefix=prefix, fallback_workers=4, clock=clock)
    assert await allowed(limiter, 10) == 10
    clock.now += 59  # same window
    assert await allowed(limiter, 1) == 0
    clock.now = START + 60  # next window: the previous one still weighs fully
    assert await allowed(limiter, 1) == 0
    clock.now = START + 90  # half-way: the previous window counts for 10 * 0.5
    assert await allowed(limiter, 10) == 5
    clock.now = START + 180  # two windows on: a full budget again
    assert await allowed(limiter, 12) == 10


async def test_zero_limit_means_unlimited(clients: list[aioredis.Redis], prefix: str) -> None:
    limiter = RateLimiter(clients[0], prefix=prefix, fallback_workers=4, clock=FakeClock())
    assert all([await limiter.allow("events", PK, 0, 60) for _ in range(50)])
    assert [key async for key in clients[0].scan_iter(match=f"{prefix}*")] == []


async def test_connections_are_counted_across_workers(
    clients: list[aioredis.Redis], prefix: str
) -> None:
    first = ConnectionCounter(clients[0], prefix=prefix, limit=3, fallback_workers=2)
    second = ConnectionCounter(clients[1], prefix=prefix, limit=3, fallback_workers=2)
    leases = [await first.acquire("9.9.9.9"), await first.acquire("9.9.9.9")]
    third = await second.acquire("9.9.9.9")
    assert all(lease is not None and lease.where == "redis" for lease in [*leases, third])
    assert await second.acquire("9.9.9.9") is None
    assert await first.acquire("9.9.9.9") is None
    assert await first.acquire("8.8.8.8") is not None  # another IP has its own count
    key = connections_key(prefix, "9.9.9.9")
    assert await clients[0].get(key) == b"3"
    assert 0 < await clients[0].pttl(key) <= 3600 * 1000  # the TTL safety net
    assert third is not None
    await second.release(third)
    fourth = await first.acquire("9.9.9.9")
    assert fourth is not None
    for lease in [*leases, fourth]:
        assert lease is not None
        await first.release(lease)
    assert await clients[0].exists(key) == 0  # back to zero: no key left behind


async def test_unlimited_connections(clients: list[aioredis.Redis], prefix: str) -> None:
    counter = ConnectionCounter(clients[0], prefix=prefix, limit=0, fallback_workers=2)
    leases = [await counter.acquire("9.9.9.9") for _ in range(10)]
    assert all(lease is not None and lease.where == "unlimited" for lease in leases)
    for lease in leases:
        assert lease is not None
        await counter.release(lease)


# ---- Redis down: the per-worker fallback ------------------------------------------------------


async def test_fallback_when_redis_dies(own_redis: RedisServer, prefix: str) -> None:
    clock = FakeClock()
    client = redis_client(own_redis.url())
    limiter = RateLimiter(client, prefix=prefix, fallback_workers=4, retry_after=5, clock=clock)
    try:
        assert await allowed(limiter, 3, limit=20) == 3
        own_redis.kill()
        # 20 per minute over an assumed 4 workers: this worker alone allows 5, then refuses.
        assert await allowed(limiter, 10, limit=20) == 5
        assert limiter.using_fallback
        assert await allowed(limiter, 10, subject="5.6.7.8", limit=20) == 5
        assert limiter.decisions["fallback_allowed"] == 10
        assert limiter.decisions["fallback_denied"] == 10
        clock.now += 6  # refills 6 s x 5/min = 0.5 token: still nothing
        assert await allowed(limiter, 1, limit=20) == 0
        clock.now += 12  # 1.5 tokens now
        assert await allowed(limiter, 2, limit=20) == 1

        own_redis.start()  # an empty Redis on the same port
        clock.now += 5  # past retry_after: Redis is tried again and used
        redis_before = limiter.decisions["redis_allowed"]
        assert await allowed(limiter, 25, limit=20) == 20
        assert limiter.decisions["redis_allowed"] == redis_before + 20
        assert not limiter.using_fallback
    finally:
        await client.aclose()


async def test_fallback_with_redis_never_there(prefix: str) -> None:
    client = redis_client(f"redis://127.0.0.1:{free_port()}/0")
    limiter = RateLimiter(client, prefix=prefix, fallback_workers=100, clock=FakeClock())
    try:
        # A limit below the worker count still lets one action through per worker.
        assert await allowed(limiter, 5, limit=10) == 1
        assert limiter.using_fallback
    finally:
        await client.aclose()


async def test_connection_counter_fallback(own_redis: RedisServer, prefix: str) -> None:
    clock = FakeClock()
    client = redis_client(own_redis.url())
    counter = ConnectionCounter(
        client, prefix=prefix, limit=4, fallback_workers=2, retry_after=5, clock=clock
    )
    try:
        in_redis = await counter.acquire("9.9.9.9")
        assert in_redis is not None and in_redis.where == "redis"
        own_redis.kill()
        local = [await counter.acquire("9.9.9.9"), await counter.acquire("9.9.9.9")]
        assert all(lease is not None and lease.where == "local" for lease in local)
        assert await counter.acquire("9.9.9.9") is None  # 4 over 2 workers: 2 here
        assert counter.using_fallback and counter.local_count("9.9.9.9") == 2
        await counter.release(in_redis)  # Redis is down: left to the TTL, never raises
        assert local[0] is not None
        await counter.release(local[0])
        assert counter.local_count("9.9.9.9") == 1
        again = await counter.acquire("9.9.9.9")
        assert again is not None and again.where == "local"

        own_redis.start()
        clock.now += 5
        back = await counter.acquire("9.9.9.9")
        assert back is not None and back.where == "redis"
        for lease in [local[1], again]:
            assert lease is not None
            await counter.release(lease)
        assert counter.local_count("9.9.9.9") == 0
    finally:
        await client.aclose()


# ---- pure helpers -----------------------------------------------------------------------------

TRUSTED = ["127.0.0.1/32", "::1/128", "10.0.0.0/8"]


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        ("203.0.113.7", None, "203.0.113.7"),
        ("203.0.113.7", "1.1.1.1", "203.0.113.7"),  # untrusted peer: header ignored
        ("127.0.0.1", None, "127.0.0.1"),
        ("127.0.0.1", "", "127.0.0.1"),
        ("127.0.0.1", "198.51.100.2", "198.51.100.2"),
        ("127.0.0.1", "6.6.6.6, 198.51.100.2", "198.51.100.2"),  # left of it is forgeable
        ("127.0.0.1", "6.6.6.6, 198.51.100.2, 10.1.2.3", "198.51.100.2"),  # proxy chain
        ("127.0.0.1", "10.9.9.9, 10.1.2.3", "10.9.9.9"),  # all trusted: the furthest one
        ("127.0.0.1", "garbage, 198.51.100.2", "198.51.100.2"),
        ("127.0.0.1", "198.51.100.2, garbage", "127.0.0.1"),  # stop at the hop that said it
        ("127.0.0.1", "6.6.6.6, garbage, 10.1.2.3", "10.1.2.3"),
        ("127.0.0.1", "198.51.100.2:5555", "198.51.100.2"),
        ("127.0.0.1", "[2001:db8::1]:443", "2001:db8::1"),
        ("127.0.0.1", "2001:DB8:0::1", "2001:db8::1"),
        ("::1", "198.51.100.2", "198.51.100.2"),
        ("::ffff:127.0.0.1", "198.51.100.2", "198.51.100.2"),  # dual-stack socket
        ("::ffff:203.0.113.7", None, "203.0.113.7"),
        ("10.0.0.1", " 198.51.100.2 ,", "10.0.0.1"),  # empty right-most entry: unreadable
        ("unix", "198.51.100.2", "unix"),
    ],
)
def test_client_ip(peer: str, forwarded_for: str | None, expected: str) -> None:
    assert client_ip(peer, forwarded_for, TRUSTED) == expected


def test_client_ip_with_no_trusted_proxies() -> None:
    assert client_ip("127.0.0.1", "198.51.100.2", []) == "127.0.0.1"


def test_ipv6_subjects_group_a_site() -> None:
    assert subject_of_ip("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert subject_of_ip("2001:db8:1:2::9") == subject_of_ip("2001:db8:1:2:ffff::1")
    assert subject_of_ip("198.51.100.2") == "198.51.100.2"
    assert subject_of_ip("unix") == "unix"


def test_fallback_limit() -> None:
    assert fallback_limit(120, 8) == 15
    assert fallback_limit(5, 8) == 1
    assert fallback_limit(10, 0) == 10


def test_token_buckets_refill_and_forget() -> None:
    buckets = TokenBuckets(max_entries=2)
    assert [buckets.take("a", 2, 60, 0.0) for _ in range(3)] == [True, True, False]
    assert not buckets.take("a", 2, 60, 29.0)  # 29 s x 2/min < 1 token
    assert buckets.take("a", 2, 60, 31.0)
    assert not buckets.take("a", 2, 60, 1000.0 - 2000.0)  # a clock stepping back adds nothing
    buckets.take("b", 2, 60, 0.0)
    buckets.take("c", 2, 60, 0.0)
    assert len(buckets) == 2  # "a" was least recently used


def test_settings_defaults_and_validation() -> None:
    settings = RateLimitSettings()
    assert settings.trusted_proxies == ["127.0.0.1/32", "::1/128"]
    assert RateLimitSettings().trusted_proxies is not settings.trusted_proxies
    loaded = msgspec.convert(
        {"connections_per_ip": 5, "trusted_proxies": ["10.0.0.0/8"]}, RateLimitSettings
    )
    assert loaded.connections_per_ip == 5 and loaded.trusted_proxies == ["10.0.0.0/8"]
    with pytest.raises(msgspec.ValidationError, match="not an IP address or CIDR"):
        msgspec.convert({"trusted_proxies": ["nginx"]}, RateLimitSettings)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"events_per_hour": 5}, RateLimitSettings)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"fallback_workers": 0}, RateLimitSettings)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"reqs_per_minute_per_ip": -1}, RateLimitSettings)


# ---- remembered refusals ----------------------------------------------------------------------


async def test_a_refusal_is_remembered_briefly_then_redis_is_asked_again(
    clients: list[aioredis.Redis], prefix: str
) -> None:
    """A flood over its limit costs no Redis round trip per message, yet regains its budget."""
    clock = FakeClock()
    limiter = RateLimiter(clients[0], prefix=prefix, fallback_workers=4, clock=clock)
    assert await allowed(limiter, 10) == 10
    assert await allowed(limiter, 50) == 0
    assert limiter.decisions["redis_denied"] == 1
    assert limiter.decisions["remembered_denied"] == 49
    clock.now += denial_hold(60)  # the memory lapses: Redis decides again (still over)
    assert await allowed(limiter, 1) == 0
    assert limiter.decisions["redis_denied"] == 2
    clock.now = START + 180  # two windows on: allowed again, through Redis
    assert await allowed(limiter, 1) == 1
    # another subject was never refused: it goes to Redis as usual
    assert await allowed(limiter, 1, subject="5.6.7.8") == 1


def test_denial_hold_is_a_sixtieth_of_the_window_at_most_a_second() -> None:
    assert denial_hold(60) == 1.0
    assert denial_hold(3600) == 1.0
    assert denial_hold(1) == 1 / 60


def test_denial_memory_is_bounded_and_expires() -> None:
    memory = DenialMemory(max_entries=2)
    memory.remember("a", 10.0)
    memory.remember("b", 10.0)
    memory.remember("c", 10.0)  # "a" is forgotten: the cap bounds memory
    assert not memory.holds("a", 5.0)
    assert memory.holds("b", 5.0) and memory.holds("c", 9.99)
    assert not memory.holds("b", 10.0)  # expired at its time
