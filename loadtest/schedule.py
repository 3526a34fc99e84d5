"""The open loop: event i is due at start + i/rate whatever the relay does.

Latency is taken from that scheduled time, so a relay that falls behind shows it in the
figures (no coordinated omission); `send_lag_ms` shows how late the generator itself was.

The loop wakes at most once per `TICK` and sends everything due by then: one timer per event
(0.2 ms apart at 5,000 ev/s) cost the generator more CPU than the sends themselves (py-spy:
`asyncio.sleep` and the loop's timer handling 70% of its samples at 3,000 ev/s), CPU the relay
under test then did not have. An event sent up to one tick late still counts that lateness in
its latency, since latency runs from the scheduled time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp

from loadtest.clients import Socket
from loadtest.presign import Frame
from loadtest.stats import LatencySummary, summarize

TICK = 0.001
"""Seconds between the send loop's wake-ups (libuv's timers have millisecond resolution)."""


@dataclass(frozen=True)
class Sent:
    start: float
    """perf_counter time the first event was due."""
    sent: int
    send_errors: int
    send_lag_ms: LatencySummary


async def offer(
    sockets: Sequence[Socket],
    plan: Sequence[Sequence[Frame]],
    rate: float,
    on_due: Callable[[str, float], None],
    *,
    deadline: float,
) -> Sent:
    """Send event i of the plan (round-robin over sockets) at start + i/rate; open loop."""
    conns = len(sockets)
    total = sum(len(events) for events in plan)
    lags: list[float] = []
    start = time.perf_counter() + 0.02
    i = 0
    send_errors = 0
    while i < total:
        now = time.perf_counter()
        if now > deadline:
            break
        due_count = min(total, int((now - start) * rate) + 1)
        while i < due_count:
            conn = i % conns
            event_id, frame = plan[conn][i // conns]
            scheduled = start + i / rate
            on_due(event_id, scheduled)
            try:
                await sockets[conn].send_str(frame)
            except (ConnectionError, RuntimeError, aiohttp.ClientError):
                send_errors += 1
            lags.append(time.perf_counter() - scheduled)
            i += 1
        next_due = start + i / rate
        delay = next_due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(max(delay, TICK))
    return Sent(start, i, send_errors, summarize(lags))
