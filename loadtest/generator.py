"""A lean asyncio open-loop load generator for the relay (uvloop + aiohttp WebSockets).

    .venv/bin/python -m loadtest.generator publish --url ws://127.0.0.1:8080 --rate 1000
    .venv/bin/python -m loadtest.generator sweep    --url ... --rates 500,1000,2000 --duration 15
    .venv/bin/python -m loadtest.generator delivery --url ... --subscribers 1000 --rate 200
    .venv/bin/python -m loadtest.generator query    --url ... --manifest fill.json --rate 200
    .venv/bin/python -m loadtest.generator hold     --url ... --connections 10000 --subs 10 \
        --live-rate 200 --live-subscribers 100

Every subcommand prints one JSON document (or writes it to --json-out): latency percentiles
(p50/p95/p99/max/mean in milliseconds), offered and achieved rates, errors by kind, and the
generator's own CPU use, so a reader can tell whether the generator or the relay was the limit.

How it stays out of the way (one core is enough for 5,000 events/s):
- every event is signed before the clock starts (coincurve; a process pool for big batches) and
  kept as the exact text frame to send;
- open loop: event i is due at start + i/rate whatever the relay does, and its latency is taken
  from that scheduled time (no coordinated omission); `send_lag` shows how late the generator
  itself was;
- one reader task per connection matches answers by event id; nothing else runs per message.

Nginx in front of the cluster hashes the client address (`hash $remote_addr consistent`), so all
connections from 127.0.0.1 would land on one instance. Connections are therefore spread over
`--sources` loopback source addresses (127.10.x.y), which Linux routes like 127.0.0.1.

Bounded by construction: each scenario has a fixed event/query count and a deadline
(duration + drain), and targets must be loopback addresses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import ipaddress
import itertools
import json
import math
import os
import random
import re
import resource
import socket
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
import orjson
from coincurve import PrivateKey

from cluster.nostr.event import Event, compute_id, encode_event, has_valid_signature
from cluster.payments.claims import payment_tag

FREE_KIND = 1
DEFAULT_PAID_KIND = 4242
CONNECT_TIMEOUT = 15.0
EOSE_TIMEOUT = 30.0
PRESIGN_POOL_THRESHOLD = 4000
"""Batches smaller than this are signed inline (no process pool, no fork)."""
MAX_EVENTS = 2_000_000
"""Upper bound of events one run may pre-sign (rate x duration)."""
MAX_CONNECTIONS = 60_000

HASHTAGS = [
    "nostr", "bitcoin", "art", "news", "music", "photography", "zap", "dev", "grownostr",
    "plebchain", "food", "travel", "books", "memes", "science", "sports", "privacy", "linux",
    "coffee", "gm",
]  # fmt: skip


# -- small helpers ------------------------------------------------------------------------------


class LoadTestError(RuntimeError):
    """A scenario could not run (refused target, relay unreachable, bad parameters)."""


def require_loopback(url: str) -> None:
    """Refuse any target that is not on this machine (127.0.0.0/8 or ::1)."""
    if "," in url:
        for one in url.split(","):
            require_loopback(one.strip())
        return
    host = urlsplit(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise LoadTestError(f"cannot resolve {host!r}: {exc}") from exc
    for address in addresses:
        if not ipaddress.ip_address(str(address).split("%", 1)[0]).is_loopback:
            raise LoadTestError(f"refusing {url}: load tests only target loopback addresses")


def http_url(ws_url: str) -> str:
    """ws://host:port/path → http://host:port (for /health and /metrics)."""
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}"


def source_addresses(count: int) -> list[str]:
    """Loopback source addresses to spread connections over (nginx hashes $remote_addr)."""
    if count <= 1:
        return ["127.0.0.1"]
    return [f"127.10.{i // 250}.{i % 250 + 1}" for i in range(min(count, 250 * 250))]


def summarize(samples: Sequence[float]) -> dict[str, float | int | None]:
    """Latency summary in milliseconds from samples in seconds (nearest-rank percentiles)."""
    if not samples:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    ordered = sorted(samples)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[min(n - 1, max(0, math.ceil(q * n) - 1))] * 1000

    return {
        "count": n,
        "p50": round(rank(0.50), 3),
        "p95": round(rank(0.95), 3),
        "p99": round(rank(0.99), 3),
        "max": round(ordered[-1] * 1000, 3),
        "mean": round(sum(ordered) / n * 1000, 3),
    }


def answer_rate(times: Sequence[float], offered: float) -> float:
    """Answers per second, from when the middle 98% of answers arrived (capped at `offered`).

    A steady latency shifts those times but keeps their spread; a relay that falls behind
    stretches it, so the rate drops below the offered one. The 1% cut at each end keeps one
    late straggler from counting as a throughput loss (it shows in p99/max instead).
    """
    n = len(times)
    if n < 2:
        return float(n)
    ordered = sorted(times)
    lo, hi = int(n * 0.01), max(int(n * 0.01) + 1, math.ceil(n * 0.99) - 1)
    hi = min(hi, n - 1)
    answers = hi - lo
    span = ordered[hi] - ordered[lo]
    if span <= 0:
        return offered
    return min(offered, answers / span)


def ok_prefix(message: str) -> str:
    """The relay's message, shortened, as an error key (hex runs elided so keys aggregate)."""
    text = re.sub(r"[0-9a-f]{16,}", "…", message or "rejected")
    return text[:80]


def secret_for(seed: str, index: int) -> str:
    """A deterministic, valid secp256k1 secret per (seed, index)."""
    return hashlib.sha256(orjson.dumps([seed, index])).hexdigest()


class CpuMeter:
    """Process CPU seconds over a wall-clock window: the generator's own load."""

    def __init__(self) -> None:
        self.cpu0 = time.process_time()
        self.wall0 = time.monotonic()

    def result(self) -> dict[str, float]:
        cpu = time.process_time() - self.cpu0
        wall = max(1e-9, time.monotonic() - self.wall0)
        return {
            "cpu_s": round(cpu, 2),
            "wall_s": round(wall, 2),
            "core_share": round(cpu / wall, 3),
        }


# -- signing ahead of time ----------------------------------------------------------------------


@dataclass(frozen=True)
class Payment:
    """A channel that pays for events sent on one connection (nonces must rise per channel)."""

    channel_id: str
    secret: str
    currency: str = "BTC"


@dataclass(frozen=True)
class SignJob:
    """Events for one connection: global index i = j * conns + conn for the j-th event."""

    secret: str
    kind: int
    conn: int
    conns: int
    count: int
    run: str
    content_bytes: int = 64
    groups: int = 0
    group_prefix: str = ""
    payments: tuple[Payment, ...] = ()
    """Channels this connection pays with, in rotation (event j uses j % len)."""
    price: int = 0
    nonce_base: int = 0
    created_at: int = 0


class FastSigner:
    """BIP-340 signatures with the keypair built once.

    coincurve's `PrivateKey.sign_schnorr` rebuilds the keypair and verifies its own signature
    on every call, about three times the cost of signing; pre-signing millions of events is
    dominated by that. This calls the same libsecp256k1 functions (through coincurve's cffi
    bindings) once per key; `checked` signatures are still verified the ordinary way.
    """

    def __init__(self, secret_hex: str) -> None:
        self.key = PrivateKey(bytes.fromhex(secret_hex))
        self.pubkey = self.key.public_key_xonly.format().hex()
        self._fast: tuple[Any, Any, Any, Any] | None = None
        try:
            from coincurve._libsecp256k1 import ffi, lib

            keypair = ffi.new("secp256k1_keypair *")
            if lib.secp256k1_keypair_create(self.key.context.ctx, keypair, self.key.secret):
                self._fast = (ffi, lib, keypair, ffi.new("unsigned char[64]"))
        except (ImportError, AttributeError):  # other coincurve builds: the public API
            self._fast = None

    def sign(self, digest: bytes) -> str:
        if self._fast is None:
            return str(self.key.sign_schnorr(digest, os.urandom(32)).hex())
        ffi, lib, keypair, out = self._fast
        ctx = self.key.context.ctx
        if not lib.secp256k1_schnorrsig_sign32(ctx, out, digest, keypair, os.urandom(32)):
            raise ValueError("BIP-340 signing failed")
        return bytes(ffi.buffer(out, 64)).hex()


def signed_event(signer: FastSigner, created_at: int, kind: int, tags: list[list[str]],
                 content: str, *, check: bool = False) -> Event:  # fmt: skip
    """A complete, valid event (id = sha256 of the NIP-01 serialisation, BIP-340 sig)."""
    event_id = compute_id(Event("", signer.pubkey, created_at, kind, tags, content, ""))
    sig = signer.sign(bytes.fromhex(event_id))
    event = Event(event_id, signer.pubkey, created_at, kind, tags, content, sig)
    if check and not has_valid_signature(event):
        raise LoadTestError("a pre-signed event does not verify")
    return event


def sign_job(job: SignJob) -> list[tuple[str, str]]:
    """(event id, the exact `["EVENT", ...]` text frame) for each event of the job."""
    signer = FastSigner(job.secret)
    created_at = job.created_at or int(time.time())
    out: list[tuple[str, str]] = []
    pad = "x" * max(0, job.content_bytes - 40)
    for j in range(job.count):
        index = j * job.conns + job.conn
        tags: list[list[str]] = [["t", "loadtest"]]
        if job.groups:
            tags.append(["t", f"{job.group_prefix}{index % job.groups}"])
        if job.payments:
            # Rotating over several channels spaces the claims of one channel out in time,
            # so one event overtaking another on the same socket (the relay handles a
            # socket's EVENTs concurrently) does not turn into a stale nonce.
            pay = job.payments[j % len(job.payments)]
            nonce = job.nonce_base + j // len(job.payments)
            tags.append(payment_tag(pay.secret, pay.channel_id, job.price, nonce, pay.currency))
        content = f"{job.run} {index} {pad}"
        event = signed_event(signer, created_at, job.kind, tags, content, check=j % 500 == 0)
        out.append((event.id, '["EVENT",' + encode_event(event).decode() + "]"))
    return out


def presign(jobs: Sequence[SignJob], processes: int = 0) -> list[list[tuple[str, str]]]:
    """Sign every job (one per connection), in a process pool when the batch is big."""
    total = sum(job.count for job in jobs)
    if total > MAX_EVENTS:
        raise LoadTestError(f"{total} events to pre-sign exceeds the bound of {MAX_EVENTS}")
    processes = processes or min(2, os.cpu_count() or 1)
    if processes <= 1 or total < PRESIGN_POOL_THRESHOLD:
        return [sign_job(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=processes, mp_context=get_context("spawn")) as pool:
        return list(pool.map(sign_job, jobs, chunksize=max(1, len(jobs) // (processes * 4))))


def publish_jobs(
    *,
    rate: float,
    duration: float,
    connections: int,
    kind: int,
    run: str,
    content_bytes: int = 64,
    groups: int = 0,
    group_prefix: str = "",
    payments: Sequence[Payment] = (),
    price: int = 0,
    signers: int = 16,
    nonce_base: int = 0,
) -> list[SignJob]:
    """One SignJob per connection covering rate x duration events, round-robin over them."""
    total = max(1, round(rate * duration))
    if payments and len(payments) < connections:
        raise LoadTestError(f"{connections} paid connections need as many channels")
    # Above any nonce an earlier run used (microseconds since the epoch).
    nonce_base = nonce_base or int(time.time() * 1_000_000)
    jobs = []
    for conn in range(connections):
        count = total // connections + (1 if conn < total % connections else 0)
        jobs.append(
            SignJob(
                secret=payments[conn].secret if payments else secret_for(run, conn % signers),
                payments=tuple(payments[conn::connections]),
                kind=kind,
                conn=conn,
                conns=connections,
                count=count,
                run=run,
                content_bytes=content_bytes,
                groups=groups,
                group_prefix=group_prefix,
                price=price,
                nonce_base=nonce_base,
            )
        )
    return jobs


# -- connections ---------------------------------------------------------------------------------


class Clients:
    """aiohttp sessions, one per loopback source address, and the sockets they opened."""

    def __init__(self, url: str, sources: int = 1) -> None:
        """`url` may list several relays, comma-separated: connections alternate between them."""
        self.urls = [u.strip() for u in url.split(",") if u.strip()]
        for one in self.urls:
            require_loopback(one)
        self.ips = source_addresses(sources)
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._next = itertools.count()
        self.opened: list[aiohttp.ClientWebSocketResponse] = []

    def _session(self, ip: str) -> aiohttp.ClientSession:
        session = self._sessions.get(ip)
        if session is None:
            connector = aiohttp.TCPConnector(
                limit=0, local_addr=(ip, 0) if ip != "127.0.0.1" else None, ssl=False
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=CONNECT_TIMEOUT, sock_connect=CONNECT_TIMEOUT
                ),
            )
            self._sessions[ip] = session
        return session

    async def connect(self) -> aiohttp.ClientWebSocketResponse:
        serial = next(self._next)
        ip = self.ips[serial % len(self.ips)]
        url = self.urls[serial % len(self.urls)]
        async with asyncio.timeout(CONNECT_TIMEOUT):
            ws = await self._session(ip).ws_connect(
                url, autoping=True, heartbeat=None, max_msg_size=16 << 20, compress=0
            )
        self.opened.append(ws)
        return ws

    async def connect_many(self, count: int, concurrency: int = 200) -> list[Any]:
        """`count` sockets (an exception object in place of each one that failed)."""
        if count > MAX_CONNECTIONS:
            raise LoadTestError(f"{count} connections exceeds the bound of {MAX_CONNECTIONS}")
        gate = asyncio.Semaphore(concurrency)

        async def one() -> Any:
            async with gate:
                try:
                    return await self.connect()
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    return exc

        return list(await asyncio.gather(*(one() for _ in range(count))))

    async def close(self) -> None:
        async def close_ws(ws: aiohttp.ClientWebSocketResponse) -> None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(3):
                    await ws.close()

        for start in range(0, len(self.opened), 2000):
            await asyncio.gather(*(close_ws(ws) for ws in self.opened[start : start + 2000]))
        self.opened.clear()
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()


async def wait_drained(drained: asyncio.Event, deadline: float) -> None:
    """Wait for the last answers, but never past `deadline` (perf_counter seconds)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.1, deadline - time.perf_counter())):
            await drained.wait()


async def pump(ws: aiohttp.ClientWebSocketResponse, handle: Callable[[str], None]) -> str:
    """Feed every text frame to `handle` until the socket closes; returns why it ended."""
    try:
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                handle(msg.data)
            elif msg.type is aiohttp.WSMsgType.ERROR:
                return "error"
    except (aiohttp.ClientError, ConnectionError) as exc:
        return type(exc).__name__
    return "closed"


class Readers:
    """Reader tasks; a socket that closes while the scenario still runs counts as an error."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[str]] = []
        self.closed_early: Counter[str] = Counter()
        self.stopping = False

    def start(self, ws: aiohttp.ClientWebSocketResponse, handle: Callable[[str], None]) -> None:
        async def run() -> str:
            reason = await pump(ws, handle)
            if not self.stopping:
                code = ws.close_code
                self.closed_early[f"disconnected ({reason}, code {code})"] += 1
            return reason

        self.tasks.append(asyncio.create_task(run()))

    async def stop(self) -> None:
        self.stopping = True
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()


# -- EVENT → OK ----------------------------------------------------------------------------------


@dataclass
class OkTracker:
    """Matches OK answers to what was sent; latency from each event's scheduled send time."""

    pending: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    duplicates: int = 0
    last_answer: float = 0.0
    answer_times: list[float] = field(default_factory=list)
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    sending_done: bool = False

    def handle(self, data: str) -> None:
        if not data.startswith('["OK"'):
            if data.startswith('["NOTICE"'):
                self.errors["notice"] += 1
            return
        message = orjson.loads(data)
        due = self.pending.pop(message[1], None)
        if due is None:
            return
        now = time.perf_counter()
        self.last_answer = now
        self.answer_times.append(now)
        if message[2]:
            self.accepted += 1
            self.latencies.append(now - due)
            if message[3].startswith("duplicate"):
                self.duplicates += 1
        else:
            self.errors[f"OK false: {ok_prefix(message[3])}"] += 1
        if self.sending_done and not self.pending:
            self.drained.set()


async def warm_up(
    sockets: Sequence[aiohttp.ClientWebSocketResponse],
    tracker: OkTracker,
    per_socket: int,
    run: str,
    *,
    payments: Sequence[Payment] = (),
    kind: int = FREE_KIND,
    price: int = 0,
    nonce: int = 0,
) -> dict[str, Any]:
    """Unmeasured events before the clock starts, then a clean slate: a few free ones per
    socket (opens each worker's paths) and one paid event per channel at `nonce` (puts the
    channel states in the relay's cache). Returns what the warm-up itself measured."""
    jobs = [
        SignJob(secret_for(f"warm-{run}", 0), FREE_KIND, c, len(sockets), per_socket, f"w{run}")
        for c in range(len(sockets))
    ]
    signed = presign(jobs, processes=1)
    rounds: list[list[tuple[str, str]]] = [
        [events[k] for events in signed] for k in range(per_socket)
    ]
    paid_round = []
    for i, pay in enumerate(payments):
        signer = FastSigner(pay.secret)
        tag = payment_tag(pay.secret, pay.channel_id, price, nonce, pay.currency)
        event = signed_event(signer, int(time.time()), kind, [tag], f"warm {run} {i}")
        paid_round.append((event.id, '["EVENT",' + encode_event(event).decode() + "]"))
    if paid_round:
        rounds.append(paid_round)
    for batch in rounds:
        for i, (event_id, frame) in enumerate(batch):
            tracker.pending[event_id] = time.perf_counter()
            with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
                await sockets[i % len(sockets)].send_str(frame)
        deadline = time.perf_counter() + 30
        while tracker.pending and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
    measured = {
        "events": sum(len(batch) for batch in rounds),
        "latency_ms": summarize(tracker.latencies),
        "errors": dict(tracker.errors),
    }
    tracker.pending.clear()
    tracker.latencies.clear()
    tracker.answer_times.clear()
    tracker.errors.clear()
    tracker.accepted = tracker.duplicates = 0
    tracker.last_answer = 0.0
    return measured


async def offer(
    sockets: Sequence[aiohttp.ClientWebSocketResponse],
    plan: Sequence[Sequence[tuple[str, str]]],
    rate: float,
    on_due: Callable[[str, float], None],
    *,
    deadline: float,
) -> dict[str, Any]:
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
            await asyncio.sleep(delay)
    return {"start": start, "sent": i, "send_errors": send_errors, "send_lag_ms": summarize(lags)}


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
    payments: Sequence[Payment] = (),
    price: int = 0,
    plan: Sequence[Sequence[tuple[str, str]]] | None = None,
    clients: Clients | None = None,
    warmup: int = 2,
) -> dict[str, Any]:
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
        opened = await clients.connect_many(connections)
        failed = [s for s in opened if isinstance(s, BaseException)]
        if failed:
            raise LoadTestError(f"{len(failed)} of {connections} connections failed: {failed[0]!r}")
        for ws in opened:
            readers.start(ws, tracker.handle)
        warmed: dict[str, Any] = {}
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
    if sent["send_errors"]:
        errors["send failed"] += sent["send_errors"]
    achieved = answer_rate(tracker.answer_times, rate) * (
        tracker.accepted / max(1, len(tracker.answer_times))
    )
    offered_total = round(rate * duration)
    return {
        "scenario": "publish",
        "kind": kind,
        "paid": bool(payments),
        "offered_rate": rate,
        "duration_s": duration,
        "connections": connections,
        "offered": offered_total,
        "sent": sent["sent"],
        "accepted": tracker.accepted,
        "duplicates": tracker.duplicates,
        "achieved_rate": round(achieved, 1),
        "last_answer_after_s": round(tracker.last_answer - sent["start"], 3)
        if tracker.last_answer
        else None,
        "latency_ms": summarize(tracker.latencies),
        "send_lag_ms": sent["send_lag_ms"],
        "errors": dict(errors),
        "error_count": sum(errors.values()),
        "presign_s": round(signing_s, 2),
        "warmup": warmed,
        "generator": generator_cpu,
    }


# -- delivery: publish → subscriber receives -------------------------------------------------------


@dataclass
class DeliveryTracker:
    published: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    received: int = 0
    unknown: int = 0
    eose: int = 0
    eose_done: asyncio.Event = field(default_factory=asyncio.Event)
    eose_expected: int = 0
    closed: Counter[str] = field(default_factory=Counter)

    def handle(self, data: str) -> None:
        if data.startswith('["EVENT"'):
            now = time.perf_counter()
            marker = data.find('"id":"')
            event_id = data[marker + 6 : marker + 70] if marker >= 0 else ""
            due = self.published.get(event_id)
            if due is None:
                self.unknown += 1
                return
            self.received += 1
            self.latencies.append(now - due)
        elif data.startswith('["EOSE"'):
            self.eose += 1
            if self.eose >= self.eose_expected:
                self.eose_done.set()
        elif data.startswith('["CLOSED"'):
            self.closed[ok_prefix(orjson.loads(data)[2])] += 1


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
    opened = await clients.connect_many(subscribers)
    failed = [s for s in opened if isinstance(s, BaseException)]
    if failed:
        raise LoadTestError(f"{len(failed)} of {subscribers} subscribers failed: {failed[0]!r}")
    tracker.eose_expected += subscribers
    for s, ws in enumerate(opened):
        readers.start(ws, tracker.handle)
        flt = {"kinds": [kind], "#t": [f"{group_prefix}{s % groups}"], "limit": 0}
        await ws.send_str(orjson.dumps(["REQ", "live", flt]).decode())
    deadline = time.perf_counter() + EOSE_TIMEOUT
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.1, deadline - time.perf_counter())):
            await tracker.eose_done.wait()
    if tracker.closed:
        raise LoadTestError(f"subscriptions refused: {dict(tracker.closed)}")
    return len(opened)


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
) -> dict[str, Any]:
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
        pubs = await clients.connect_many(publishers)
        failed = [s for s in pubs if isinstance(s, BaseException)]
        if failed:
            raise LoadTestError(f"{len(failed)} publisher connections failed: {failed[0]!r}")
        for ws in pubs:
            readers.start(ws, oks.handle)
        await asyncio.sleep(0.2)  # let every worker's index settle before the clock starts
        cpu = CpuMeter()
        total = sum(len(events) for events in plan)
        per_group = [total // groups + (1 if g < total % groups else 0) for g in range(groups)]
        expected = sum(n * len(range(g, subscribers, groups)) for g, n in enumerate(per_group))
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
    return {
        "scenario": "delivery",
        "offered_rate": rate,
        "duration_s": duration,
        "subscribers": subscribers,
        "fanout": fanout,
        "publishers": publishers,
        "sent": sent["sent"],
        "accepted": oks.accepted,
        "expected_deliveries": expected,
        "delivered": delivery.received,
        "delivery_rate": round(delivery.received / duration, 1),
        "latency_ms": summarize(delivery.latencies),
        "publish_latency_ms": summarize(oks.latencies),
        "send_lag_ms": sent["send_lag_ms"],
        "errors": dict(errors),
        "error_count": sum(errors.values()),
        "presign_s": round(signing_s, 2),
        "generator": generator_cpu,
    }


# -- REQ → EOSE ------------------------------------------------------------------------------------


QUERY_SHAPES = (
    "author_recent",
    "author_kind",
    "follow_feed",
    "kind_recent",
    "thread_replies",
    "mentions",
    "hashtag",
    "ids",
    "time_window",
)


def make_filter(shape: str, manifest: dict[str, Any] | None, rng: random.Random) -> dict[str, Any]:
    """One filter of a common shape, with values drawn from the fill manifest when given."""
    manifest = manifest or {}

    def pick(key: str, fallback: Callable[[], str], skew: float = 2.0) -> str:
        values = manifest.get(key) or []
        if not values:
            return fallback()
        return str(values[int(len(values) * rng.random() ** skew)])

    def random_hex() -> str:
        return rng.randbytes(32).hex()

    now = int(time.time())
    t_min = int(manifest.get("time_min", now - 3600))
    t_max = int(manifest.get("time_max", now))
    if shape == "author_recent":
        return {"authors": [pick("authors", random_hex)], "limit": 20}
    if shape == "author_kind":
        return {"authors": [pick("authors", random_hex)], "kinds": [1], "limit": 20}
    if shape == "follow_feed":
        follows = sorted({pick("authors", random_hex, 1.5) for _ in range(20)})
        return {"authors": follows, "kinds": [1, 6], "limit": 50}
    if shape == "kind_recent":
        return {"kinds": [rng.choice([1, 7, 6])], "limit": 20}
    if shape == "thread_replies":
        return {"#e": [pick("e_targets", random_hex)], "kinds": [1, 7], "limit": 50}
    if shape == "mentions":
        return {"#p": [pick("p_targets", random_hex)], "limit": 20}
    if shape == "hashtag":
        tags = manifest.get("hashtags") or HASHTAGS
        return {"#t": [tags[int(len(tags) * rng.random() ** 2)]], "kinds": [1], "limit": 20}
    if shape == "ids":
        return {"ids": sorted({pick("event_ids", random_hex, 1.0) for _ in range(5)})}
    if shape == "time_window":
        since = rng.randint(t_min, max(t_min, t_max - 600))
        return {"since": since, "until": since + 600, "limit": 50}
    raise ValueError(f"unknown query shape {shape!r}")


@dataclass
class QueryTracker:
    inflight: dict[str, tuple[float, str]] = field(default_factory=dict)
    by_shape: dict[str, list[float]] = field(default_factory=dict)
    events: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    answered: int = 0
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    sending_done: bool = False

    def handle(self, data: str) -> None:
        if data.startswith('["EVENT"'):
            end = data.find('"', 10)
            sub_id = data[10:end]
            entry = self.inflight.get(sub_id)
            if entry is not None:
                self.events[entry[1]] += 1
            return
        message = orjson.loads(data)
        if message[0] not in ("EOSE", "CLOSED"):
            return
        entry = self.inflight.pop(message[1], None)
        if entry is None:
            return
        self.answered += 1
        if message[0] == "EOSE":
            self.by_shape.setdefault(entry[1], []).append(time.perf_counter() - entry[0])
        else:
            self.errors[f"CLOSED: {ok_prefix(message[2])}"] += 1
        if self.sending_done and not self.inflight:
            self.drained.set()


async def run_query(
    url: str,
    *,
    rate: float = 200,
    duration: float = 20,
    connections: int = 20,
    manifest: dict[str, Any] | None = None,
    shapes: Sequence[str] = QUERY_SHAPES,
    sources: int = 32,
    drain: float = 10.0,
    seed: int = 1,
    max_inflight_per_conn: int = 15,
) -> dict[str, Any]:
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
        opened = await clients.connect_many(max(1, connections))
        failed = [s for s in opened if isinstance(s, BaseException)]
        if failed:
            raise LoadTestError(f"{len(failed)} query connections failed: {failed[0]!r}")
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
    return {
        "scenario": "query",
        "offered_rate": rate,
        "duration_s": duration,
        "connections": connections,
        "queries": total,
        "answered": tracker.answered,
        "achieved_rate": round(len(every) / duration, 1),
        "latency_ms": summarize(every),
        "by_shape": {
            shape: {
                **summarize(tracker.by_shape.get(shape, [])),
                "events": tracker.events.get(shape, 0),
                "filter_example": make_filter(shape, manifest, random.Random(seed)),
            }
            for shape in shapes
        },
        "errors": dict(errors),
        "error_count": sum(errors.values()),
        "generator": generator_cpu,
    }


# -- held connections with subscriptions -----------------------------------------------------------


def idle_filter(rng: random.Random, index: int) -> dict[str, Any]:
    """Realistic subscriptions that the scenario's own events never match: follow lists,
    mentions, threads and kinds, all on keys that are not in use (so matching is exercised
    through the index but delivers nothing)."""
    roll = index % 20
    if roll < 12:
        authors = sorted({rng.randbytes(32).hex() for _ in range(rng.randint(1, 20))})
        return {"authors": authors, "kinds": [1, 6, 7], "limit": 0}
    if roll < 16:
        return {"#p": [rng.randbytes(32).hex()], "kinds": [1, 7, 9735], "limit": 0}
    if roll < 19:
        return {"#e": [rng.randbytes(32).hex() for _ in range(rng.randint(1, 3))], "limit": 0}
    return {"kinds": [rng.randint(20000, 29999)], "limit": 0}  # ephemeral kinds nobody sends


def process_tree_rss(pids: Iterable[int]) -> dict[str, Any]:
    """RSS (MiB) of each root process plus all its descendants."""
    import psutil

    total = 0
    count = 0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
                count += 1
    return {"rss_mib": round(total / 2**20, 1), "processes": count}


def health_snapshot(urls: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for url in urls:
        try:
            with urllib.request.urlopen(f"{http_url(url)}/health", timeout=5) as response:
                out.append({"url": url, **json.loads(response.read())})
        except (OSError, ValueError) as exc:
            out.append({"url": url, "error": str(exc)})
    return out


async def run_hold(
    url: str,
    *,
    connections: int = 10_000,
    subs: int = 10,
    hold: float = 10.0,
    sources: int = 64,
    concurrency: int = 200,
    watch: dict[str, list[int]] | None = None,
    health_urls: Sequence[str] = (),
    live_rate: float = 0.0,
    live_duration: float = 30.0,
    live_subscribers: int = 100,
    live_fanout: int = 10,
    live_publishers: int = 10,
    seed: int = 7,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Open and hold `connections` sockets with `subs` subscriptions each; optionally measure
    live delivery (publish → receive) at `live_rate` while they are held."""
    rng = random.Random(seed)
    watch = watch or {}

    def memory(phase: str) -> dict[str, Any]:
        snapshot = {name: process_tree_rss(pids) for name, pids in watch.items()}
        snapshot["generator"] = {
            "rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        }
        log(f"{phase}: " + ", ".join(f"{k} {v['rss_mib']} MiB" for k, v in snapshot.items()))
        return snapshot

    phases: dict[str, Any] = {"baseline": memory("baseline")}
    clients = Clients(url, sources)
    readers = Readers()
    eose_latencies: list[float] = []
    unexpected_events = 0
    refused: Counter[str] = Counter()
    result: dict[str, Any] = {"scenario": "hold"}
    try:
        cpu = CpuMeter()
        started = time.perf_counter()
        connect_times: list[float] = []

        async def timed_connect() -> Any:
            t0 = time.perf_counter()
            ws = await clients.connect()
            connect_times.append(time.perf_counter() - t0)
            return ws

        gate = asyncio.Semaphore(concurrency)

        async def one() -> Any:
            async with gate:
                try:
                    return await timed_connect()
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    return exc

        if connections > MAX_CONNECTIONS:
            raise LoadTestError(f"{connections} exceeds the bound of {MAX_CONNECTIONS}")
        opened = await asyncio.gather(*(one() for _ in range(connections)))
        sockets = [ws for ws in opened if not isinstance(ws, BaseException)]
        failures = Counter(type(ws).__name__ for ws in opened if isinstance(ws, BaseException))
        connect_s = time.perf_counter() - started
        log(f"opened {len(sockets)} of {connections} connections in {connect_s:.1f}s")
        phases["connected"] = memory("connected")
        phases["connected_health"] = health_snapshot(health_urls)

        # Subscribe: every socket sends `subs` REQs; its reader counts EOSEs.
        waiting: dict[int, list[Any]] = {}
        all_eose = asyncio.Event()
        remaining = [len(sockets)]

        def make_handler(index: int) -> Callable[[str], None]:
            def handle(data: str) -> None:
                nonlocal unexpected_events
                state = waiting.get(index)
                if data.startswith('["EVENT"'):
                    unexpected_events += 1
                    return
                if state is None:
                    return
                if data.startswith('["EOSE"'):
                    eose_latencies.append(time.perf_counter() - state[0])
                    state[1] -= 1
                elif data.startswith('["CLOSED"'):
                    refused[ok_prefix(orjson.loads(data)[2])] += 1
                    state[1] -= 1
                else:
                    return
                if state[1] <= 0:
                    del waiting[index]
                    remaining[0] -= 1
                    if remaining[0] <= 0:
                        all_eose.set()

            return handle

        sub_started = time.perf_counter()
        if subs > 0 and sockets:
            for index, ws in enumerate(sockets):
                waiting[index] = [time.perf_counter(), subs]
                readers.start(ws, make_handler(index))
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
                async with asyncio.timeout(EOSE_TIMEOUT + connections * subs / 2000):
                    await all_eose.wait()
        else:
            for index, ws in enumerate(sockets):
                readers.start(ws, make_handler(index))
        subscribe_s = time.perf_counter() - sub_started
        active_subs = (
            len(sockets) * subs - sum(refused.values()) - sum(s[1] for s in waiting.values())
        )
        log(f"{active_subs} subscriptions active after {subscribe_s:.1f}s")
        phases["subscribed"] = memory("subscribed")
        phases["subscribed_health"] = health_snapshot(health_urls)

        live: dict[str, Any] | None = None
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
                live = {"failed": str(exc), "error_count": 1, "errors": {str(exc): 1}}
        hold_until = time.perf_counter() + hold
        while time.perf_counter() < hold_until:
            await asyncio.sleep(min(1.0, hold_until - time.perf_counter()))
        alive = sum(1 for ws in sockets if not ws.closed)
        phases["end"] = memory("end")
        result.update(
            {
                "connections": connections,
                "opened": len(sockets),
                "connect_failures": dict(failures),
                "connect_s": round(connect_s, 2),
                "connect_ms": summarize(connect_times),
                "subs_per_connection": subs,
                "subscriptions": active_subs,
                "subscribe_s": round(subscribe_s, 2),
                "req_eose_ms": summarize(eose_latencies),
                "refused": dict(refused),
                "alive_at_end": alive,
                "unexpected_events": unexpected_events,
                "hold_s": hold,
                "memory": phases,
                "live": live,
                "generator": cpu.result(),
            }
        )
    finally:
        await readers.stop()
        await clients.close()
    errors = Counter(readers.closed_early)
    errors.update(
        {f"connect failed: {k}": v for k, v in result.get("connect_failures", {}).items()}
    )
    errors.update({f"REQ refused: {k}": v for k, v in refused.items()})
    result["errors"] = dict(errors)
    result["error_count"] = sum(errors.values())
    return result


# -- rate sweep ----------------------------------------------------------------------------------


async def run_sweep(
    url: str,
    *,
    rates: Sequence[float],
    duration: float,
    connections: int = 50,
    kind: int = FREE_KIND,
    sources: int = 32,
    pause: float = 2.0,
    stop_after_failures: int = 2,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Publish at each rate in turn; stops early after `stop_after_failures` overloaded steps."""
    steps = []
    overloaded = 0
    for rate in rates:
        log(f"sweep: {rate:g} events/s for {duration:g}s")
        step = await run_publish(
            url, rate=rate, duration=duration, connections=connections, kind=kind, sources=sources
        )
        steps.append(step)
        kept_up = step["achieved_rate"] >= 0.99 * rate and step["error_count"] == 0
        overloaded = 0 if kept_up else overloaded + 1
        if overloaded >= stop_after_failures:
            break
        await asyncio.sleep(pause)
    return {"scenario": "sweep", "duration_s": duration, "steps": steps}


# -- CLI -----------------------------------------------------------------------------------------


def load_payments(path: str | None) -> tuple[list[Payment], int, int]:
    """Channels file: {"kind": K, "price": P, "channels": [{"channel_id", "secret", ...}]}."""
    if not path:
        return [], DEFAULT_PAID_KIND, 0
    data = json.loads(Path(path).read_text())
    payments = [
        Payment(c["channel_id"], c["secret"], c.get("currency", "BTC")) for c in data["channels"]
    ]
    return payments, int(data.get("kind", DEFAULT_PAID_KIND)), int(data.get("price", 1))


def _watch(values: Sequence[str]) -> dict[str, list[int]]:
    watch: dict[str, list[int]] = {}
    for value in values:
        name, _, pids = value.partition("=")
        watch.setdefault(name, []).extend(int(p) for p in pids.split(",") if p)
    return watch


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loadtest.generator", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--url", required=True, help="ws:// URL of the relay (loopback only)")
        sub.add_argument("--sources", type=int, default=32, help="loopback source addresses")
        sub.add_argument("--json-out", help="write the result here instead of stdout")

    publish = commands.add_parser("publish", help="EVENT → OK at a constant offered rate")
    common(publish)
    publish.add_argument("--rate", type=float, default=1000)
    publish.add_argument("--duration", type=float, default=60)
    publish.add_argument("--connections", type=int, default=50)
    publish.add_argument("--kind", type=int, default=FREE_KIND)
    publish.add_argument("--content-bytes", type=int, default=64)
    publish.add_argument("--drain", type=float, default=10)
    publish.add_argument("--channels", help="JSON file of paid channels (publishes paid events)")

    sweep = commands.add_parser("sweep", help="publish at several rates in turn")
    common(sweep)
    sweep.add_argument("--rates", default="500,1000,2000,3000,5000")
    sweep.add_argument("--duration", type=float, default=15)
    sweep.add_argument("--connections", type=int, default=50)
    sweep.add_argument("--kind", type=int, default=FREE_KIND)
    sweep.add_argument("--pause", type=float, default=2.0, help="seconds between steps")

    delivery = commands.add_parser("delivery", help="publish → subscriber receives")
    common(delivery)
    delivery.add_argument("--rate", type=float, default=200)
    delivery.add_argument("--duration", type=float, default=30)
    delivery.add_argument("--subscribers", type=int, default=1000)
    delivery.add_argument("--fanout", type=int, default=10, help="subscribers per event")
    delivery.add_argument("--publishers", type=int, default=10)

    query = commands.add_parser("query", help="REQ → EOSE for common filter shapes")
    common(query)
    query.add_argument("--rate", type=float, default=200)
    query.add_argument("--duration", type=float, default=20)
    query.add_argument("--connections", type=int, default=20)
    query.add_argument("--manifest", help="fill manifest JSON (authors, ids, tags to ask for)")
    query.add_argument("--shapes", default=",".join(QUERY_SHAPES))
    query.add_argument("--seed", type=int, default=1, help="picks the filters' values")

    hold = commands.add_parser("hold", help="hold N connections with K subscriptions each")
    common(hold)
    hold.set_defaults(sources=64)
    hold.add_argument("--connections", type=int, default=10_000)
    hold.add_argument("--subs", type=int, default=10)
    hold.add_argument("--hold", type=float, default=10)
    hold.add_argument("--concurrency", type=int, default=200, help="handshakes at once")
    hold.add_argument("--watch", action="append", default=[], help="name=pid[,pid]: RSS of trees")
    hold.add_argument("--health", action="append", default=[], help="instance URL for /health")
    hold.add_argument("--live-rate", type=float, default=0)
    hold.add_argument("--live-duration", type=float, default=30)
    hold.add_argument("--live-subscribers", type=int, default=100)
    hold.add_argument("--live-fanout", type=int, default=10)
    return parser


async def _main_async(args: argparse.Namespace) -> dict[str, Any]:
    def log(line: str) -> None:
        print(f"# {line}", file=sys.stderr, flush=True)

    if args.command == "publish":
        payments, kind, price = load_payments(args.channels)
        return await run_publish(
            args.url,
            rate=args.rate,
            duration=args.duration,
            connections=min(args.connections, len(payments)) if payments else args.connections,
            kind=kind if payments else args.kind,
            content_bytes=args.content_bytes,
            sources=args.sources,
            drain=args.drain,
            payments=payments,
            price=price,
        )
    if args.command == "sweep":
        rates = [float(r) for r in args.rates.split(",") if r]
        return await run_sweep(
            args.url,
            rates=rates,
            duration=args.duration,
            connections=args.connections,
            kind=args.kind,
            sources=args.sources,
            pause=args.pause,
            log=log,
        )
    if args.command == "delivery":
        return await run_delivery(
            args.url,
            rate=args.rate,
            duration=args.duration,
            subscribers=args.subscribers,
            fanout=args.fanout,
            publishers=args.publishers,
            sources=args.sources,
        )
    if args.command == "query":
        return await run_query(
            args.url,
            rate=args.rate,
            duration=args.duration,
            connections=args.connections,
            manifest=args.manifest_data,
            shapes=[s for s in args.shapes.split(",") if s],
            sources=args.sources,
            seed=args.seed,
        )
    return await run_hold(
        args.url,
        connections=args.connections,
        subs=args.subs,
        hold=args.hold,
        sources=args.sources,
        concurrency=args.concurrency,
        watch=_watch(args.watch),
        health_urls=args.health,
        live_rate=args.live_rate,
        live_duration=args.live_duration,
        live_subscribers=args.live_subscribers,
        live_fanout=args.live_fanout,
        log=log,
    )


def raise_nofile_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (many sockets); returns the new (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def run_async(coro: Awaitable[Any]) -> Any:
    """Run on uvloop when it is installed (it is a dependency of the relay)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    manifest = getattr(args, "manifest", None)
    args.manifest_data = json.loads(Path(manifest).read_text()) if manifest else None
    raise_nofile_limit()
    try:
        result = run_async(_main_async(args))
    except LoadTestError as exc:
        print(f"loadtest.generator: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2, default=_json_default)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    else:
        print(text)
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, msgspec.Struct):
        return msgspec.to_builtins(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(main())
