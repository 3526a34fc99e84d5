"""The invalidation channel (cluster/bus/invalidation.py) on a real Redis: announcements reach
every listener, bursts coalesce, and a lost subscription is re-made and followed by a reload."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from cluster.bus.constants import moderation_channel
from cluster.bus.invalidation import Invalidations
from tests.services import unique_name


class Counter:
    def __init__(self, delay: float = 0.0) -> None:
        self.count = 0
        self.delay = delay

    async def reload(self) -> None:
        await asyncio.sleep(self.delay)
        self.count += 1


def reloaded(counter: Counter, times: int) -> Callable[[], bool]:
    return lambda: counter.count >= times


async def eventually(condition: Callable[[], bool], seconds: float) -> float:
    """Seconds until `condition` held (fails after `seconds`)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, "condition not met in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture
async def channel() -> str:
    return moderation_channel(unique_name("inval") + ":")


@pytest.fixture
async def listeners(
    redis_url: str, channel: str
) -> AsyncIterator[list[tuple[Invalidations, Counter]]]:
    started = []
    for delay in (0.0, 0.0, 0.2):  # the last one reloads slowly: announcements pile up
        counter = Counter(delay)
        invalidations = Invalidations(redis_url, channel, counter.reload)
        await invalidations.start()
        started.append((invalidations, counter))
    try:
        for _, counter in started:
            await eventually(reloaded(counter, 1), 5)  # the first subscribe reloads
        yield started
    finally:
        for invalidations, _ in started:
            await invalidations.close()


async def test_an_announcement_reaches_every_listener_within_a_second(
    listeners: list[tuple[Invalidations, Counter]],
) -> None:
    announcer = listeners[0][0]
    assert await announcer.announce() is True
    for _, counter in listeners:
        assert await eventually(reloaded(counter, 2), 1.0) < 1.0


async def test_a_burst_coalesces_into_few_reloads(
    listeners: list[tuple[Invalidations, Counter]],
) -> None:
    announcer = listeners[0][0]
    for _ in range(50):
        await announcer.announce()
    slow = listeners[2][1]
    await eventually(lambda: slow.count >= 2, 2.0)
    await asyncio.sleep(0.6)  # whatever was still queued has run
    assert 2 <= slow.count <= 4  # one running and at most one queued at a time, not 50


async def test_a_lost_subscription_is_renewed_and_reloads(
    redis_url: str, channel: str, listeners: list[tuple[Invalidations, Counter]]
) -> None:
    invalidations, counter = listeners[0]
    admin = aioredis.Redis.from_url(redis_url)
    try:
        clients = await admin.client_list()
        ours = [c["id"] for c in clients if c.get("name") == f"{channel}-listener"]
        assert ours, "the listeners name their connections"
        before = counter.count
        for client_id in ours:
            await admin.client_kill_filter(_id=client_id)
        await eventually(lambda: counter.count > before, 5.0)  # resubscribed, then reloaded
        await eventually(lambda: invalidations.subscribed, 5.0)
        before = counter.count
        assert await listeners[1][0].announce() is True
        await eventually(lambda: counter.count > before, 1.0)  # and it hears announcements again
    finally:
        await admin.aclose()
