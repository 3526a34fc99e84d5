"""Publish → subscriber receives: subscribers in groups, each event addressed to one group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter

import orjson

from loadtest.clients import Clients, Readers
from loadtest.errors import LoadTestError
from loadtest.presign import FREE_KIND, presign, publish_jobs
from loadtest.results import DeliveryResult
from loadtest.schedule import offer
from loadtest.stats import CpuMeter, summarize
from loadtest.trackers import DeliveryTracker, OkTracker

EOSE_TIMEOUT = 30.0


async def subscribe_groups(
    clients: Clients,
    tracker: DeliveryTracker,
    readers: Readers,
    *,
    subscribers: int,
    groups: int,
    group_prefix: str,
    kind: int,
) -> int:
    """Open `subscribers` sockets; subscriber s watches group s % groups (live only, limit 0)."""
    opened = await clients.connect_all(subscribers, "subscribers")
    tracker.eose_expected += subscribers
    for s, ws in enumerate(opened):
        readers.start(ws, tracker.handle)
        flt = {"kinds": [kind], "#t": [f"{group_prefix}{s % groups}"], "limit": 0}
        await ws.send_str(orjson.dumps(["REQ", "live", flt]).decode())
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(EOSE_TIMEOUT):
            await tracker.eose_done.wait()
    if tracker.closed:
        raise LoadTestError(f"subscriptions refused: {dict(tracker.closed)}")
    return len(opened)


def expected_deliveries(total: int, groups: int, subscribers: int) -> int:
    """Events are spread round-robin over groups; group g has the subscribers s ≡ g mod groups."""
    per_group = [total // groups + (1 if g < total % groups else 0) for g in range(groups)]
    return sum(n * len(range(g, subscribers, groups)) for g, n in enumerate(per_group))


async def run_delivery(
    url: str,
    *,
    rate: float = 200,
    duration: float = 30,
    subscribers: int = 1000,
    fanout: int = 10,
    publishers: int = 10,
    kind: int = FREE_KIND,
    sources: int = 32,
    drain: float = 10.0,
    clients: Clients | None = None,
) -> DeliveryResult:
    """Subscribers in groups of `fanout`; each published event is addressed to one group, so
    every event reaches `fanout` subscribers (fanout = subscribers: every subscriber gets all)."""
    fanout = max(1, min(fanout, subscribers))
    groups = max(1, subscribers // fanout)
    run = os.urandom(6).hex()
    prefix = f"g{run}-"
    publishers = max(1, min(publishers, int(rate * duration)))
    jobs = publish_jobs(
        rate=rate,
        duration=duration,
        connections=publishers,
        kind=kind,
        run=run,
        groups=groups,
        group_prefix=prefix,
    )
    signing = time.monotonic()
    plan = presign(jobs)
    signing_s = time.monotonic() - signing
    own_clients = clients is None
    clients = clients or Clients(url, sources)
    delivery = DeliveryTracker()
    oks = OkTracker()
    readers = Readers()
    try:
        await subscribe_groups(
            clients,
            delivery,
            readers,
            subscribers=subscribers,
            groups=groups,
            group_prefix=prefix,
            kind=kind,
        )
        pubs = await clients.connect_all(publishers, "publisher connections")
        for ws in pubs:
            readers.start(ws, oks.handle)
        await asyncio.sleep(0.2)  # let every worker's index settle before the clock starts
        cpu = CpuMeter()
        expected = expected_deliveries(sum(len(e) for e in plan), groups, subscribers)
        deadline = time.perf_counter() + duration + drain + 5

        def due(event_id: str, scheduled: float) -> None:
            oks.pending[event_id] = scheduled
            delivery.published[event_id] = scheduled

        sent = await offer(pubs, plan, rate, due, deadline=deadline)
        oks.sending_done = True
        while delivery.received < expected and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        generator_cpu = cpu.result()
    finally:
        await readers.stop()
        if own_clients:
            await clients.close()
    errors = Counter(oks.errors)
    errors.update(readers.closed_early)
    if expected > delivery.received:
        errors["not delivered within the drain time"] += expected - delivery.received
    return DeliveryResult(
        scenario="delivery",
        offered_rate=rate,
        duration_s=duration,
        subscribers=subscribers,
        fanout=fanout,
        publishers=publishers,
        sent=sent.sent,
        accepted=oks.accepted,
        expected_deliveries=expected,
        delivered=delivery.received,
        delivery_rate=round(delivery.received / duration, 1),
        latency_ms=summarize(delivery.latencies),
        publish_latency_ms=summarize(oks.latencies),
        send_lag_ms=sent.send_lag_ms,
        errors=dict(errors),
        error_count=sum(errors.values()),
        presign_s=round(signing_s, 2),
        generator=generator_cpu,
    )
