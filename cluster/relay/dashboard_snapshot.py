"""Each worker's own figures for the operator dashboard, published to Redis every 2 s.

Any worker answers GET /dashboard/data, but only its own process sees its metric values (and
in multiprocess mode /metrics files are read by path, not by instance). So every worker writes
a compact snapshot under `<prefix>dashboard:worker:<instance>:<pid>` with a 10 s TTL, and
records itself in the `<prefix>dashboard:workers` hash (worker -> last seen). The data
endpoint reads both: a worker in the hash whose snapshot expired is down, and an instance all
of whose workers are down is reported down, with the time it was last seen.

Values are read from the prometheus_client objects (`collect()`, this process's values,
buffered increments included), so the per-event hot path is untouched. Counters become rates
over the last interval; histograms become bucket counts over the last WINDOW seconds, which
the data endpoint sums across workers before taking percentiles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

from cluster import metrics
from cluster.bus.constants import dashboard_snapshot_key, dashboard_workers_key
from cluster.bus.redis_clients import redis_from_settings
from cluster.relay.background import running
from cluster.relay.context import RelayContext
from cluster.relay.keys import CONTEXT_KEY, SETTINGS_KEY

log = logging.getLogger(__name__)

INTERVAL = 2.0
"""How often a worker publishes its snapshot."""
TTL = 10
"""Seconds a snapshot lives in Redis: past it (five missed publications) the worker is down."""
WINDOW = 60.0
"""Latency percentiles cover the last minute, so the dashboard shows now, not since start."""
FORGET_AFTER = 24 * 3600
"""A worker not seen for a day is dropped from the registry (a retired instance)."""
PING_TIMEOUT = 1.0

# The seed's four latency targets: histogram, and the p95 it must stay under (seconds).
TARGETS: dict[str, tuple[Histogram, float]] = {
    "acceptance": (metrics.EVENT_ACCEPTANCE, 0.010),
    "payment": (metrics.PAYMENT_VERIFICATION, 0.050),
    "delivery": (metrics.DELIVERY_LAG, 0.100),
    "db": (metrics.DB_QUERY, 0.005),
}
# Counters shown as rates (per second over the last interval).
RATES: dict[str, Counter] = {
    "delivered": metrics.EVENTS_DELIVERED,
    "outbox_forwarded": metrics.OUTBOX_FORWARDED,
    "outbox_dead": metrics.OUTBOX_DEAD_LETTERS,
    "dassie_failures": metrics.DASSIE_FAILURES,
    "dassie_rejected": metrics.DASSIE_REJECTED,
}


class LatencyWindow(msgspec.Struct):
    """Histogram bucket counts observed during the window (not cumulative since start)."""

    bounds: list[float]
    """The finite upper bounds."""
    counts: list[float]
    """Cumulative per bucket, as Prometheus does: counts[i] observations <= bounds[i]."""
    total: float
    """All observations (the +Inf bucket)."""
    sum: float


class Health(msgspec.Struct):
    postgres: str
    redis: str
    ledger: str
    """`off` without a Dassie node, else the breaker: `ok` closed, `degraded`, `down` open."""


class Snapshot(msgspec.Struct):
    instance: str
    pid: int
    at: float
    started: float
    connections: int
    subscriptions: int
    ok_total: dict[str, float]
    """OK answers by prefix since the worker started."""
    ok_rate: dict[str, float]
    """OK answers by prefix per second over the last interval."""
    rates: dict[str, float]
    latency: dict[str, LatencyWindow]
    health: Health
    breaker: float
    bus: dict[str, int]

    @property
    def worker(self) -> str:
        return f"{self.instance}:{self.pid}"


Samples = list[tuple[dict[str, str], float]]


def _samples(metric: Counter | Gauge | Histogram, suffix: str) -> Samples:
    return [
        (sample.labels, sample.value)
        for family in metric.collect()
        for sample in family.samples
        if sample.name.endswith(suffix)
    ]


def _counter_value(counter: Counter) -> float:
    return sum(value for _, value in _samples(counter, "_total"))


def _ok_totals() -> dict[str, float]:
    return {labels["prefix"]: value for labels, value in _samples(metrics.OK_ANSWERS, "_total")}


def _histogram_state(histogram: Histogram) -> LatencyWindow:
    """Cumulative buckets since start, summed over label sets (DB_QUERY's operations)."""
    by_bound: dict[float, float] = {}
    for labels, value in _samples(histogram, "_bucket"):
        bound = float(labels["le"])
        if math.isinf(bound):
            continue  # the +Inf bucket is `total` (and JSON has no infinity)
        by_bound[bound] = by_bound.get(bound, 0.0) + value
    bounds = sorted(by_bound)
    total = sum(value for _, value in _samples(histogram, "_count"))
    seconds = sum(value for _, value in _samples(histogram, "_sum"))
    return LatencyWindow(bounds, [by_bound[b] for b in bounds], total, seconds)


def _difference(now: LatencyWindow, then: LatencyWindow) -> LatencyWindow:
    if now.bounds != then.bounds:
        return now
    return LatencyWindow(
        now.bounds,
        [a - b for a, b in zip(now.counts, then.counts, strict=True)],
        now.total - then.total,
        now.sum - then.sum,
    )


def _ledger_state(configured: bool, breaker: float) -> str:
    if not configured:
        return "off"
    return "ok" if breaker == 0 else "degraded" if breaker < 1 else "down"


def instance_name(context: RelayContext) -> str:
    """Instances are told apart by host and port (k8s pods by host, `up` instances by port)."""
    return f"{socket.gethostname()}:{context.settings.network.port}"


class SnapshotTaker:
    """Reads this worker's metrics and turns them into a `Snapshot` (rates and windows)."""

    def __init__(self, context: RelayContext) -> None:
        self.context = context
        self.instance = instance_name(context)
        self.started = time.time()
        self.postgres = "ok"
        self._last: tuple[float, dict[str, float], dict[str, float]] | None = None
        # Starts from nothing observed, so a worker younger than WINDOW shows everything since
        # it started: a first snapshot taken after the first queries hid them from the window.
        empty = {name: LatencyWindow([], [], 0.0, 0.0) for name in TARGETS}
        self._history: deque[tuple[float, dict[str, LatencyWindow]]] = deque(
            [(self.started, empty)]
        )

    @property
    def worker(self) -> str:
        return f"{self.instance}:{os.getpid()}"

    async def check_postgres(self) -> None:
        try:
            await asyncio.wait_for(self.context.store.ping(), PING_TIMEOUT)
            self.postgres = "ok"
        except Exception:  # down for whatever reason: the logs of the pool say which
            self.postgres = "down"

    def take(self) -> Snapshot:
        now = time.time()
        ok = _ok_totals()
        counters = {name: _counter_value(counter) for name, counter in RATES.items()}
        ok_rate: dict[str, float] = {}
        rates: dict[str, float] = {}
        if self._last is not None:
            then, last_ok, last_counters = self._last
            elapsed = max(now - then, 1e-3)
            ok_rate = {k: max(0.0, v - last_ok.get(k, 0.0)) / elapsed for k, v in ok.items()}
            rates = {
                k: max(0.0, v - last_counters.get(k, 0.0)) / elapsed for k, v in counters.items()
            }
        self._last = (now, ok, counters)
        states = {name: _histogram_state(histogram) for name, (histogram, _) in TARGETS.items()}
        self._history.append((now, states))
        while len(self._history) > 1 and self._history[0][0] < now - WINDOW:
            self._history.popleft()
        oldest = self._history[0][1]
        latency = {name: _difference(state, oldest[name]) for name, state in states.items()}
        breaker = sum(value for _, value in _samples(metrics.DASSIE_BREAKER, ""))
        context = self.context
        bus = context.bus
        return Snapshot(
            instance=self.instance,
            pid=os.getpid(),
            at=now,
            started=self.started,
            connections=context.stats.connections,
            subscriptions=len(context.index),
            ok_total=ok,
            ok_rate=ok_rate,
            rates=rates,
            latency=latency,
            health=Health(
                postgres=self.postgres,
                redis="ok" if bus.connected else "down",
                ledger=_ledger_state(bool(context.settings.dassie.url), breaker),
            ),
            breaker=breaker,
            bus={"published": bus.published, "received": bus.received, "dropped": bus.dropped},
        )


class DashboardFeed:
    """This worker's publisher, and the reader of every worker's snapshot (for the endpoint)."""

    def __init__(self, context: RelayContext, client: aioredis.Redis) -> None:
        self.taker = SnapshotTaker(context)
        self.client = client
        self.prefix = context.settings.redis.key_prefix
        self.latest: Snapshot | None = None

    async def publish(self) -> None:
        await self.taker.check_postgres()
        snapshot = self.taker.take()
        self.latest = snapshot
        worker = self.taker.worker
        pipe = self.client.pipeline(transaction=False)
        pipe.set(dashboard_snapshot_key(self.prefix, worker), msgspec.json.encode(snapshot), ex=TTL)
        pipe.hset(dashboard_workers_key(self.prefix), worker, str(snapshot.at))
        pipe.expire(dashboard_workers_key(self.prefix), FORGET_AFTER)
        await pipe.execute()

    async def read_all(self) -> tuple[dict[str, float], dict[str, Snapshot]]:
        """Every registered worker with its last-seen time, and the snapshots still alive."""
        registry: dict[Any, Any] = await self.client.hgetall(dashboard_workers_key(self.prefix))
        seen = {_text(worker): float(at) for worker, at in registry.items()}
        now = time.time()
        forgotten = [worker for worker, at in seen.items() if at < now - FORGET_AFTER]
        if forgotten:
            await self.client.hdel(dashboard_workers_key(self.prefix), *forgotten)
        workers = [worker for worker in seen if worker not in forgotten]
        snapshots: dict[str, Snapshot] = {}
        if workers:
            raws = await self.client.mget([dashboard_snapshot_key(self.prefix, w) for w in workers])
            for worker, raw in zip(workers, raws, strict=True):
                if raw is not None:
                    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                        snapshots[worker] = msgspec.json.decode(raw, type=Snapshot)
        return {w: seen[w] for w in workers}, snapshots


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


DASHBOARD_KEY = web.AppKey("dashboard", DashboardFeed)


async def dashboard_publisher(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: publish this worker's snapshot every INTERVAL (Redis down: retried)."""
    settings = app[SETTINGS_KEY]
    client = redis_from_settings(settings.redis, socket_timeout=1.0, socket_connect_timeout=1.0)
    feed = DashboardFeed(app[CONTEXT_KEY], client)
    app[DASHBOARD_KEY] = feed

    async def publish_forever() -> None:
        failing = False
        while True:
            try:
                await feed.publish()
                failing = False
            except Exception as exc:  # Redis away: keep the local snapshot, retry next tick
                if not failing:
                    log.warning("dashboard snapshot not published: %s", exc)
                failing = True
            await asyncio.sleep(INTERVAL)

    try:
        async with running(publish_forever(), "dashboard-publisher"):
            yield
    finally:
        await client.aclose()
