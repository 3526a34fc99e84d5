"""Payment metrics move where things happen: the channel cache's levels, the Dassie client."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from cluster import metrics
from cluster.payments.breaker import CircuitBreaker, Permit
from cluster.payments.channels import ChannelStateCache, PaymentUnavailable
from cluster.payments.dassie import BreakerState, DassieClient, DassieUnavailable
from cluster.payments.model import ChannelState
from cluster.payments.rpc import export_breaker_state
from cluster.services.ports import free_port
from tests.unit.payments.fakes import Payer

TOKEN = "t" * 32


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def cache_counts() -> dict[tuple[str, str], float]:
    return {
        (level, result): sample("relay_channel_cache_total", level=level, result=result)
        for level in ("l1", "l2", "l3")
        for result in ("hit", "miss", "stale")
    }


def moved(before: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    return {
        key: value - before[key] for key, value in cache_counts().items() if value != before[key]
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Node:
    def __init__(self, state: ChannelState) -> None:
        self.state = state
        self.up = True

    async def get_channel_state(self, channel_id: str) -> ChannelState | None:
        if not self.up:
            raise DassieUnavailable("node down (scripted)")
        return self.state


class FakeRedis:
    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        return self.values.get(key)

    async def set(self, key: str, value: bytes, ex: int) -> None:
        self.values[key] = value


def cache(node: Node, redis: FakeRedis | None, clock: Clock) -> ChannelStateCache:
    return ChannelStateCache(
        node,
        redis,  # type: ignore[arg-type]
        prefix="test:",
        ttl=10.0,
        stale_grace=60.0,
        clock=clock,
    )


async def test_channel_cache_counts_hits_and_misses_by_level() -> None:
    node, redis, clock = Node(Payer().state()), FakeRedis(), Clock()
    first = cache(node, redis, clock)
    before = cache_counts()
    assert (await first.get("btc:test")).from_cache is False
    assert moved(before) == {("l1", "miss"): 1, ("l2", "miss"): 1, ("l3", "hit"): 1}

    before = cache_counts()
    assert (await first.get("btc:test")).from_cache is True
    assert moved(before) == {("l1", "hit"): 1}

    before = cache_counts()  # another worker: empty L1, Redis has it
    assert (await cache(node, redis, clock).get("btc:test")).from_cache is True
    assert moved(before) == {("l1", "miss"): 1, ("l2", "hit"): 1}

    before = cache_counts()  # a fresh lookup skips L1 and L2
    assert (await first.get("btc:test", fresh=True)).from_cache is False
    assert moved(before) == {("l3", "hit"): 1}


async def test_channel_cache_counts_node_misses_and_stale_answers() -> None:
    node, clock = Node(Payer().state()), Clock()
    lonely = cache(node, None, clock)  # no Redis: no L2 counts at all
    await lonely.get("btc:test")
    node.up = False
    clock.now += 11  # past the TTL, inside the stale grace
    before = cache_counts()
    assert (await lonely.get("btc:test")).from_cache is True
    assert moved(before) == {("l1", "miss"): 1, ("l3", "miss"): 1, ("l1", "stale"): 1}
    clock.now += 60  # past the grace: fail closed
    before = cache_counts()
    with pytest.raises(PaymentUnavailable):
        await lonely.get("btc:test")
    assert moved(before) == {("l1", "miss"): 1, ("l3", "miss"): 1}


async def test_dassie_calls_failures_and_breaker_state_are_exported() -> None:
    clock = Clock()
    url = f"ws://127.0.0.1:{free_port()}/rpc"  # nothing listens there
    method = "payment.getChannelState"
    calls = sample("relay_dassie_calls_total", method=method)
    failures = sample("relay_dassie_failures_total")
    rejected = sample("relay_dassie_rejected_total")
    async with DassieClient(
        url, TOKEN, timeout=2.0, failure_threshold=1, reset_after=30.0, clock=clock
    ) as client:
        assert sample("relay_dassie_breaker_state") == 0.0
        with pytest.raises(DassieUnavailable, match="cannot connect"):
            await client.get_channel_state("btc:test")
        assert client.breaker_state is BreakerState.OPEN
        assert sample("relay_dassie_breaker_state") == 1.0
        with pytest.raises(DassieUnavailable, match="circuit breaker is open"):
            await client.get_channel_state("btc:test")
        assert sample("relay_dassie_calls_total", method=method) == calls + 2
        assert sample("relay_dassie_failures_total") == failures + 1
        assert sample("relay_dassie_rejected_total") == rejected + 1

        clock.now += 30  # half-open: the trial fails (still nothing there) and reopens
        with pytest.raises(DassieUnavailable, match="cannot connect"):
            await client.get_channel_state("btc:test")
        assert client.breaker.opened_total == 2
        assert sample("relay_dassie_failures_total") == failures + 2
    text, _ = metrics.render()
    assert b'relay_dassie_calls_total{method="payment.getChannelState"}' in text
    assert b"relay_dassie_breaker_state 1.0" in text


def test_breaker_gauge_follows_every_state() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, reset_after=30.0, clock=clock, on_change=export_breaker_state)
    assert sample("relay_dassie_breaker_state") == 0.0
    breaker.failure(Permit.NORMAL)
    assert sample("relay_dassie_breaker_state") == 1.0
    clock.now += 30
    trial = breaker.acquire()
    assert trial is Permit.TRIAL
    assert sample("relay_dassie_breaker_state") == 0.5
    breaker.success(trial)
    assert sample("relay_dassie_breaker_state") == 0.0
