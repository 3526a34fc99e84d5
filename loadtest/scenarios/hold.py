"""Many held sockets with idle subscriptions; optionally live delivery measured meanwhile.

Memory is sampled at each phase (baseline, connected, subscribed, end) for the watched process
trees, so the bench can tell what 1,000 connections and 1,000 subscriptions cost the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import aiohttp
import orjson

from loadtest.clients import MAX_CONNECTIONS, Clients, Readers, Socket
from loadtest.errors import LoadTestError
from loadtest.filters import idle_filter
from loadtest.results import DeliveryResult, HoldMemory, HoldResult, TreeRss
from loadtest.scenarios.delivery import EOSE_TIMEOUT, run_delivery
from loadtest.stats import CpuMeter, summarize
from loadtest.trackers import SubscribeTracker
from loadtest.watch import health_snapshot, memory_snapshot


def _quiet(line: str) -> None:
    pass


async def subscribe_all(
    sockets: Sequence[Socket],
    readers: Readers,
    tracker: SubscribeTracker,
    subs: int,
    rng: random.Random,
) -> None:
    """`subs` idle REQs on every socket, then wait (bounded) until each has been answered."""
    if subs <= 0 or not sockets:
        for index, ws in enumerate(sockets):
            readers.start(ws, tracker.handler(index))
        return
    for index, ws in enumerate(sockets):
        tracker.expect(index, subs)
        readers.start(ws, tracker.handler(index))
        frames = [
            orjson.dumps(["REQ", f"idle{k}", idle_filter(rng, index * subs + k)]).decode()
            for k in range(subs)
        ]
        with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
            for frame in frames:
                await ws.send_str(frame)
        if index % 500 == 499:
            await asyncio.sleep(0)  # let readers drain answers while we send
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(EOSE_TIMEOUT + len(sockets) * subs / 2000):
            await tracker.all_answered.wait()


async def run_hold(
    url: str,
    *,
    connections: int = 10_000,
    subs: int = 10,
    hold: float = 10.0,
    sources: int = 64,
    concurrency: int = 200,
    watch: Mapping[str, Sequence[int]] | None = None,
    health_urls: Sequence[str] = (),
    live_rate: float = 0.0,
    live_duration: float = 30.0,
    live_subscribers: int = 100,
    live_fanout: int = 10,
    live_publishers: int = 10,
    seed: int = 7,
    log: Callable[[str], None] = _quiet,
) -> HoldResult:
    """Open and hold `connections` sockets with `subs` subscriptions each; optionally measure
    live delivery (publish → receive) at `live_rate` while they are held."""
    if connections > MAX_CONNECTIONS:
        raise LoadTestError(f"{connections} exceeds the bound of {MAX_CONNECTIONS}")
    rng = random.Random(seed)
    watched = watch or {}

    def memory(phase: str) -> dict[str, TreeRss]:
        snapshot = memory_snapshot(watched)
        log(f"{phase}: " + ", ".join(f"{k} {v.rss_mib} MiB" for k, v in snapshot.items()))
        return snapshot

    phases = HoldMemory(baseline=memory("baseline"))
    clients = Clients(url, sources)
    readers = Readers()
    try:
        cpu = CpuMeter()
        started = time.perf_counter()
        connect_times: list[float] = []
        opened = await clients.connect_many(connections, concurrency, connect_times)
        sockets = [ws for ws in opened if not isinstance(ws, BaseException)]
        failures = Counter(type(ws).__name__ for ws in opened if isinstance(ws, BaseException))
        connect_s = time.perf_counter() - started
        log(f"opened {len(sockets)} of {connections} connections in {connect_s:.1f}s")
        phases.connected = memory("connected")
        phases.connected_health = health_snapshot(health_urls)

        tracker = SubscribeTracker(len(sockets))
        sub_started = time.perf_counter()
        await subscribe_all(sockets, readers, tracker, subs, rng)
        subscribe_s = time.perf_counter() - sub_started
        active_subs = len(sockets) * subs - sum(tracker.refused.values()) - tracker.pending()
        log(f"{active_subs} subscriptions active after {subscribe_s:.1f}s")
        phases.subscribed = memory("subscribed")
        phases.subscribed_health = health_snapshot(health_urls)

        live: DeliveryResult | None = None
        live_failure: str | None = None
        if live_rate > 0:
            log(f"live delivery at {live_rate:g} events/s for {live_duration:g}s")
            try:
                live = await run_delivery(
                    url,
                    rate=live_rate,
                    duration=live_duration,
                    subscribers=live_subscribers,
                    fanout=live_fanout,
                    publishers=live_publishers,
                    sources=sources,
                )
            except LoadTestError as exc:  # e.g. no room for more connections: report it
                log(f"live delivery failed: {exc}")
                live_failure = str(exc)
        hold_until = time.perf_counter() + hold
        while time.perf_counter() < hold_until:
            await asyncio.sleep(min(1.0, hold_until - time.perf_counter()))
        alive = sum(1 for ws in sockets if not ws.closed)
        phases.end = memory("end")
        generator_cpu = cpu.result()
    finally:
        await readers.stop()
        await clients.close()
    errors = Counter(readers.closed_early)
    errors.update({f"connect failed: {k}": v for k, v in failures.items()})
    errors.update({f"REQ refused: {k}": v for k, v in tracker.refused.items()})
    return HoldResult(
        scenario="hold",
        connections=connections,
        opened=len(sockets),
        connect_failures=dict(failures),
        connect_s=round(connect_s, 2),
        connect_ms=summarize(connect_times),
        subs_per_connection=subs,
        subscriptions=active_subs,
        subscribe_s=round(subscribe_s, 2),
        req_eose_ms=summarize(tracker.eose_latencies),
        refused=dict(tracker.refused),
        alive_at_end=alive,
        unexpected_events=tracker.unexpected_events,
        hold_s=hold,
        memory=phases,
        live=live,
        live_failure=live_failure,
        generator=generator_cpu,
        errors=dict(errors),
        error_count=sum(errors.values()),
    )
