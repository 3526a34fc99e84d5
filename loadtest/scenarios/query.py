"""REQ → EOSE at a constant offered rate, round-robin over the common filter shapes."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Sequence

import aiohttp
import orjson

from loadtest.clients import Clients, Readers, wait_drained
from loadtest.files import FillManifest
from loadtest.filters import QUERY_SHAPES, make_filter
from loadtest.results import QueryResult, ShapeResult
from loadtest.stats import CpuMeter, summarize
from loadtest.trackers import QueryTracker


async def run_query(
    url: str,
    *,
    rate: float = 200,
    duration: float = 20,
    connections: int = 20,
    manifest: FillManifest | None = None,
    shapes: Sequence[str] = QUERY_SHAPES,
    sources: int = 32,
    drain: float = 10.0,
    seed: int = 1,
    max_inflight_per_conn: int = 15,
) -> QueryResult:
    """REQ → EOSE at a constant offered rate, round-robin over shapes; CLOSE after each EOSE."""
    rng = random.Random(seed)
    total = max(1, round(rate * duration))
    filters = [(shapes[i % len(shapes)], make_filter(shapes[i % len(shapes)], manifest, rng))
               for i in range(total)]  # fmt: skip
    clients = Clients(url, sources)
    tracker = QueryTracker()
    readers = Readers()
    skipped = 0
    try:
        opened = await clients.connect_all(max(1, connections), "query connections")
        per_conn: list[set[str]] = [set() for _ in opened]
        for ws in opened:
            readers.start(ws, tracker.handle)
        cpu = CpuMeter()
        start = time.perf_counter() + 0.02
        deadline = start + duration + drain + 5
        i = 0
        while i < total and time.perf_counter() < deadline:
            due_count = min(total, int((time.perf_counter() - start) * rate) + 1)
            while i < due_count:
                shape, flt = filters[i]
                conn = i % len(opened)
                live = per_conn[conn]
                live.intersection_update(tracker.inflight)
                if len(live) >= max_inflight_per_conn:
                    skipped += 1
                else:
                    sub_id = f"q{i}"
                    tracker.inflight[sub_id] = (start + i / rate, shape)
                    live.add(sub_id)
                    with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
                        # CLOSE right behind the REQ: the relay handles a socket's REQs in
                        # order, so it answers EOSE first and then drops the subscription.
                        await opened[conn].send_str(orjson.dumps(["REQ", sub_id, flt]).decode())
                        await opened[conn].send_str(orjson.dumps(["CLOSE", sub_id]).decode())
                i += 1
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        tracker.sending_done = True
        if tracker.inflight:
            await wait_drained(tracker.drained, deadline)
        generator_cpu = cpu.result()
    finally:
        await readers.stop()
        await clients.close()
    errors = Counter(tracker.errors)
    errors.update(readers.closed_early)
    if tracker.inflight:
        errors["no EOSE within the drain time"] += len(tracker.inflight)
    if skipped:
        errors["skipped: too many in flight on a connection"] += skipped
    every = [x for values in tracker.by_shape.values() for x in values]
    by_shape = {}
    for shape in shapes:
        s = summarize(tracker.by_shape.get(shape, []))
        by_shape[shape] = ShapeResult(
            count=s.count,
            p50=s.p50,
            p95=s.p95,
            p99=s.p99,
            max=s.max,
            mean=s.mean,
            events=tracker.events.get(shape, 0),
            filter_example=make_filter(shape, manifest, random.Random(seed)),
        )
    return QueryResult(
        scenario="query",
        offered_rate=rate,
        duration_s=duration,
        connections=connections,
        queries=total,
        answered=tracker.answered,
        achieved_rate=round(len(every) / duration, 1),
        latency_ms=summarize(every),
        by_shape=by_shape,
        errors=dict(errors),
        error_count=sum(errors.values()),
        generator=generator_cpu,
    )
