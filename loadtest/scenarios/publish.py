"""EVENT → OK at a constant offered rate, free or paid, after an unmeasured warm-up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import Sequence

import aiohttp

from cluster.nostr.signing import Signer, event_frame
from cluster.payments.claims import payment_tag
from loadtest.clients import Clients, Readers, Socket, wait_drained
from loadtest.errors import LoadTestError
from loadtest.files import Channel
from loadtest.presign import (
    FREE_KIND,
    Frame,
    SignJob,
    presign,
    publish_jobs,
    secret_for,
    signed_event,
)
from loadtest.results import PublishResult, Warmup
from loadtest.schedule import offer
from loadtest.stats import CpuMeter, answer_rate, summarize
from loadtest.trackers import OkTracker

WARMUP_TIMEOUT = 30.0
"""Seconds one warm-up round may wait for its answers."""


async def warm_up(
    sockets: Sequence[Socket],
    tracker: OkTracker,
    per_socket: int,
    run: str,
    *,
    payments: Sequence[Channel] = (),
    kind: int = FREE_KIND,
    price: int = 0,
    nonce: int = 0,
) -> Warmup:
    """Unmeasured events before the clock starts, then a clean slate: a few free ones per
    socket (opens each worker's paths) and one paid event per channel at `nonce` (puts the
    channel states in the relay's cache). Returns what the warm-up itself measured."""
    jobs = [
        SignJob(secret_for(f"warm-{run}", 0), FREE_KIND, c, len(sockets), per_socket, f"w{run}")
        for c in range(len(sockets))
    ]
    signed = presign(jobs, processes=1)
    rounds: list[list[Frame]] = [[events[k] for events in signed] for k in range(per_socket)]
    paid_round = []
    for i, pay in enumerate(payments):
        tag = payment_tag(pay.secret, pay.channel_id, price, nonce, pay.currency)
        event = signed_event(Signer(pay.secret), int(time.time()), kind, [tag], f"warm {run} {i}")
        paid_round.append((event.id, event_frame(event)))
    if paid_round:
        rounds.append(paid_round)
    for batch in rounds:
        for i, (event_id, frame) in enumerate(batch):
            tracker.pending[event_id] = time.perf_counter()
            with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
                await sockets[i % len(sockets)].send_str(frame)
        deadline = time.perf_counter() + WARMUP_TIMEOUT
        while tracker.pending and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
    measured = Warmup(
        events=sum(len(batch) for batch in rounds),
        latency_ms=summarize(tracker.latencies),
        errors=dict(tracker.errors),
    )
    tracker.reset()
    return measured


async def run_publish(
    url: str,
    *,
    rate: float,
    duration: float,
    connections: int = 50,
    kind: int = FREE_KIND,
    content_bytes: int = 64,
    sources: int = 32,
    drain: float = 10.0,
    payments: Sequence[Channel] = (),
    price: int = 0,
    plan: Sequence[Sequence[Frame]] | None = None,
    clients: Clients | None = None,
    warmup: int = 2,
) -> PublishResult:
    """EVENT → OK at a constant offered rate (after `warmup` unmeasured free events per
    connection); achieved = the rate at which answers came back (see `answer_rate`)."""
    if rate <= 0 or duration <= 0:
        raise LoadTestError("rate and duration must be positive")
    connections = max(1, min(connections, int(rate * duration)))
    run = os.urandom(6).hex()
    nonce_base = int(time.time() * 1_000_000) + 1  # warm-up claims use nonce_base - 1
    signing = time.monotonic()
    if plan is None:
        jobs = publish_jobs(
            nonce_base=nonce_base,
            rate=rate,
            duration=duration,
            connections=connections,
            kind=kind,
            run=run,
            content_bytes=content_bytes,
            payments=payments,
            price=price,
        )
        plan = presign(jobs)
    signing_s = time.monotonic() - signing
    own_clients = clients is None
    clients = clients or Clients(url, sources)
    tracker = OkTracker()
    readers = Readers()
    try:
        opened = await clients.connect_all(connections, "connections")
        for ws in opened:
            readers.start(ws, tracker.handle)
        warmed: Warmup | None = None
        if warmup > 0:
            warmed = await warm_up(
                opened,
                tracker,
                warmup,
                run,
                payments=payments,
                kind=kind,
                price=price,
                nonce=nonce_base - 1,
            )
        cpu = CpuMeter()
        deadline = time.perf_counter() + duration + drain + 5

        def due(event_id: str, scheduled: float) -> None:
            tracker.pending[event_id] = scheduled

        sent = await offer(opened, plan, rate, due, deadline=deadline)
        tracker.sending_done = True
        if tracker.pending:
            await wait_drained(tracker.drained, deadline)
        generator_cpu = cpu.result()
    finally:
        await readers.stop()
        if own_clients:
            await clients.close()
    errors = Counter(tracker.errors)
    errors.update(readers.closed_early)
    if tracker.pending:
        errors["no answer within the drain time"] += len(tracker.pending)
    if sent.send_errors:
        errors["send failed"] += sent.send_errors
    achieved = answer_rate(tracker.answer_times, rate) * (
        tracker.accepted / max(1, len(tracker.answer_times))
    )
    return PublishResult(
        scenario="publish",
        kind=kind,
        paid=bool(payments),
        offered_rate=rate,
        duration_s=duration,
        connections=connections,
        offered=round(rate * duration),
        sent=sent.sent,
        accepted=tracker.accepted,
        duplicates=tracker.duplicates,
        achieved_rate=round(achieved, 1),
        last_answer_after_s=round(tracker.last_answer - sent.start, 3)
        if tracker.last_answer
        else None,
        latency_ms=summarize(tracker.latencies),
        send_lag_ms=sent.send_lag_ms,
        errors=dict(errors),
        error_count=sum(errors.values()),
        presign_s=round(signing_s, 2),
        warmup=warmed,
        generator=generator_cpu,
    )
