"""Locust users for the relay over WebSockets (websocket-client, cooperative under gevent).

    .venv/bin/locust -f loadtest/locustfile.py --headless -u 20 -r 20 --run-time 30s \
        --host ws://127.0.0.1:8080 --csv /tmp/relay FreePublisher QueryUser

Locust has no WebSocket client of its own. `websocket-client` is a plain-socket client, so
locust's gevent monkey-patching (done when locust is imported, before this file) makes every
connect/send/recv cooperative; each user owns one socket. Latencies are reported with
`events.request.fire` (milliseconds), so they appear in locust's tables, CSV and JSON output.

User classes (name them on the command line to pick some):

    FreePublisher      EVENT → OK for a free kind, events pre-signed in on_start.
    PaidPublisher      EVENT → OK for a priced kind; each user takes its own channel from
                       LOCUST_CHANNELS_FILE (claim nonces must rise per channel), claims signed
                       with cluster.payments.claims.payment_tag and pre-signed in on_start.
    StampedPublisher   signs at send time with the wall-clock send time in the content and a
                       `t` tag: the source of events for DeliverySubscriber.
    DeliverySubscriber REQ for that tag (live only); reports publish → receive latency from the
                       timestamp in the content ("DELIVER" requests).
    IdleHolder         holds one connection with LOCUST_IDLE_SUBS subscriptions; answers pings.
    QueryUser          REQ → EOSE for common filter shapes (values from LOCUST_MANIFEST, a fill
                       manifest written by loadtest/bench.py), then CLOSE.

Knobs (environment variables):

    LOCUST_<CLASS>_USERS   fixed user count of a class (e.g. LOCUST_FREEPUBLISHER_USERS=20);
                           0 (default) = locust's weights decide
    LOCUST_FREE_RATE       events/s per FreePublisher (constant_throughput; default 10)
    LOCUST_FREE_KIND       kind of free events (default 1)
    LOCUST_PAID_RATE       events/s per PaidPublisher (default 5)
    LOCUST_CHANNELS_FILE   JSON {"kind", "price", "channels": [{"channel_id", "secret"}]}
    LOCUST_CHANNEL_ID, LOCUST_CHANNEL_SECRET, LOCUST_PAID_KIND, LOCUST_PRICE
                           one channel instead of a file (then run one PaidPublisher only)
    LOCUST_PRESIGN         events pre-signed per publisher in on_start (default 500; recycled
                           by re-signing when used up)
    LOCUST_STAMP_RATE      events/s per StampedPublisher (default 5)
    LOCUST_DELIVERY_TAG    `t` tag shared by StampedPublisher and DeliverySubscriber
    LOCUST_IDLE_SUBS       subscriptions per IdleHolder (default 10; the relay allows 20)
    LOCUST_QUERY_RATE      REQs/s per QueryUser (default 5)
    LOCUST_MANIFEST        fill manifest for QueryUser's filter values
    LOCUST_SOURCES         loopback source addresses to spread users over (nginx hashes the
                           client address; default 1 = 127.0.0.1)
    LOCUST_TIMEOUT         seconds to wait for an answer (default 10)

Only loopback hosts are accepted (`--host ws://127.0.0.1:PORT`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import websocket
from locust import User, constant, constant_throughput, events, task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `loadtest` and `cluster`

from cluster.nostr.signing import Signer, event_frame
from cluster.payments.claims import payment_tag
from loadtest.files import Channel, ChannelsFile, FillManifest, read_channels, read_manifest
from loadtest.filters import QUERY_SHAPES, make_filter
from loadtest.loopback import require_loopback, source_addresses
from loadtest.presign import SignJob, sign_job

Message = list[Any]
"""A relay message as decoded JSON (`["OK", id, accepted, text]`, `["EOSE", sub_id]`, ...)."""


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


TIMEOUT = _env_float("LOCUST_TIMEOUT", 10)
FREE_KIND = _env_int("LOCUST_FREE_KIND", 1)
PRESIGN = _env_int("LOCUST_PRESIGN", 500)
DELIVERY_TAG = os.environ.get("LOCUST_DELIVERY_TAG", "locust-delivery")
SOURCES = source_addresses(_env_int("LOCUST_SOURCES", 1))
_user_numbers = itertools.count()
_channel_numbers = itertools.count()


def _load_channels() -> ChannelsFile:
    path = os.environ.get("LOCUST_CHANNELS_FILE")
    if path:
        return read_channels(path)
    channel = os.environ.get("LOCUST_CHANNEL_ID")
    secret = os.environ.get("LOCUST_CHANNEL_SECRET")
    return ChannelsFile(
        kind=_env_int("LOCUST_PAID_KIND", 4242),
        price=_env_int("LOCUST_PRICE", 1),
        channels=[Channel(channel, secret)] if channel and secret else [],
    )


def _load_manifest() -> FillManifest | None:
    path = os.environ.get("LOCUST_MANIFEST")
    return read_manifest(path) if path else None


class NostrSocket:
    """One websocket-client connection, reporting what it measures to locust."""

    def __init__(self, url: str, source: str) -> None:
        require_loopback(url)
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        started = time.perf_counter()
        try:
            sock = socket.create_connection(
                (parts.hostname, port),
                timeout=TIMEOUT,
                source_address=(source, 0) if source != "127.0.0.1" else None,
            )
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.ws = websocket.create_connection(url, timeout=TIMEOUT, socket=sock)
        except Exception as exc:
            fire("WS", "connect", started, exception=exc)
            raise
        fire("WS", "connect", started)

    def send(self, message: str | list[Any]) -> None:
        self.ws.send(message if isinstance(message, str) else orjson.dumps(message).decode())

    def recv(self) -> Message:
        message: Message = orjson.loads(self.ws.recv())
        return message

    def recv_until(
        self, predicate: Callable[[Message], bool], timeout: float = TIMEOUT
    ) -> tuple[list[Message], Message]:
        """Messages before the first one matching `predicate`, and that one (bounded wait)."""
        deadline = time.monotonic() + timeout
        before: list[Message] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no answer in time")
            self.ws.settimeout(remaining)
            message = self.recv()
            if predicate(message):
                return before, message
            before.append(message)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close(timeout=1)


def ends(sub_id: str) -> Callable[[Message], bool]:
    """Matches the EOSE or CLOSED that answers the REQ `sub_id`."""
    return lambda m: m[0] in ("EOSE", "CLOSED") and m[1] == sub_id


def fire(
    request_type: str,
    name: str,
    started: float,
    *,
    length: int = 0,
    exception: BaseException | None = None,
    elapsed_ms: float | None = None,
) -> None:
    # (locust's EventHook.fire has no annotations)
    events.request.fire(  # type: ignore[no-untyped-call]
        request_type=request_type,
        name=name,
        response_time=elapsed_ms
        if elapsed_ms is not None
        else (time.perf_counter() - started) * 1000,
        response_length=length,
        exception=exception,
        context={},
    )


class NostrUser(User):
    """Base: one socket per user, opened in on_start and closed in on_stop."""

    abstract = True
    wait_time = constant(1)

    def on_start(self) -> None:
        self.number = next(_user_numbers)
        if not self.host:
            raise RuntimeError("no --host: give the relay's ws:// URL (loopback only)")
        self.conn = NostrSocket(self.host, SOURCES[self.number % len(SOURCES)])

    def on_stop(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None:
            conn.close()

    def publish(self, event_id: str, frame: str, name: str) -> None:
        started = time.perf_counter()
        try:
            self.conn.send(frame)
            _, ok = self.conn.recv_until(lambda m: m[0] == "OK" and m[1] == event_id)
        except Exception as exc:
            fire("EVENT", name, started, exception=exc)
            return
        error = None if ok[2] else RuntimeError(f"OK false: {ok[3]}")
        fire("EVENT", name, started, length=len(frame), exception=error)


class FreePublisher(NostrUser):
    fixed_count = _env_int("LOCUST_FREEPUBLISHER_USERS", 0)
    wait_time = constant_throughput(_env_float("LOCUST_FREE_RATE", 10))

    def on_start(self) -> None:
        super().on_start()
        self.batch = 0
        self.events: list[tuple[str, str]] = []
        self._refill()

    def _refill(self) -> None:
        """Pre-sign the next PRESIGN events (unique content per user and batch)."""
        job = SignJob(
            secret=os.urandom(32).hex(),
            kind=FREE_KIND,
            conn=0,
            conns=1,
            count=PRESIGN,
            run=f"locust-{self.number}-{self.batch}-{os.urandom(3).hex()}",
        )
        self.batch += 1
        self.events = sign_job(job)
        self.events.reverse()

    @task
    def publish_free(self) -> None:
        if not self.events:
            self._refill()
        event_id, frame = self.events.pop()
        self.publish(event_id, frame, f"kind {FREE_KIND} (free)")


class PaidPublisher(NostrUser):
    fixed_count = _env_int("LOCUST_PAIDPUBLISHER_USERS", 0)
    wait_time = constant_throughput(_env_float("LOCUST_PAID_RATE", 5))

    def on_start(self) -> None:
        super().on_start()
        loaded = _load_channels()
        self.kind, self.price = loaded.kind, loaded.price
        index = next(_channel_numbers)
        if index >= len(loaded.channels):
            raise RuntimeError(
                f"PaidPublisher #{index + 1} has no channel of its own "
                f"({len(loaded.channels)} in LOCUST_CHANNELS_FILE/LOCUST_CHANNEL_ID)"
            )
        channel = loaded.channels[index]
        self.channel_id = channel.channel_id
        self.currency = channel.currency
        self.signer = Signer(channel.secret)
        self.nonce = int(time.time() * 1_000_000)  # above any nonce an earlier run used
        self.events: list[tuple[str, str]] = []
        self._refill()

    def _refill(self) -> None:
        out = []
        for _ in range(PRESIGN):
            self.nonce += 1
            tag = payment_tag(
                self.signer.secret, self.channel_id, self.price, self.nonce, self.currency
            )
            event = self.signer.sign(self.kind, f"locust paid {self.nonce}", [tag])
            out.append((event.id, event_frame(event)))
        out.reverse()
        self.events = out

    @task
    def publish_paid(self) -> None:
        if not self.events:
            self._refill()
        event_id, frame = self.events.pop()
        self.publish(event_id, frame, f"kind {self.kind} (paid)")


class StampedPublisher(NostrUser):
    fixed_count = _env_int("LOCUST_STAMPEDPUBLISHER_USERS", 0)
    wait_time = constant_throughput(_env_float("LOCUST_STAMP_RATE", 5))

    def on_start(self) -> None:
        super().on_start()
        self.signer = Signer()

    @task
    def publish_stamped(self) -> None:
        content = json.dumps({"sent": time.time(), "nonce": os.urandom(4).hex()})
        event = self.signer.sign(FREE_KIND, content, [["t", DELIVERY_TAG]])
        self.publish(event.id, event_frame(event), "stamped (for delivery)")


class DeliverySubscriber(NostrUser):
    fixed_count = _env_int("LOCUST_DELIVERYSUBSCRIBER_USERS", 0)
    wait_time = constant(0)

    def on_start(self) -> None:
        super().on_start()
        started = time.perf_counter()
        flt = {"kinds": [FREE_KIND], "#t": [DELIVERY_TAG], "limit": 0}
        try:
            self.conn.send(["REQ", "delivery", flt])
            self.conn.recv_until(ends("delivery"))
        except Exception as exc:
            fire("REQ", "delivery subscribe", started, exception=exc)
            raise
        fire("REQ", "delivery subscribe", started)

    @task
    def receive(self) -> None:
        self.conn.ws.settimeout(1.0)
        try:
            message = self.conn.recv()
        except websocket.WebSocketTimeoutException:
            return
        if message[0] != "EVENT":
            return
        try:
            sent = float(json.loads(message[2]["content"])["sent"])
        except (ValueError, KeyError, TypeError):
            return
        elapsed_ms = max(0.0, (time.time() - sent) * 1000)
        fire("DELIVER", "publish → receive", 0.0, elapsed_ms=elapsed_ms, length=len(message[2]))


class IdleHolder(NostrUser):
    fixed_count = _env_int("LOCUST_IDLEHOLDER_USERS", 0)
    wait_time = constant(0)

    def on_start(self) -> None:
        super().on_start()
        rng = random.Random()
        subs = _env_int("LOCUST_IDLE_SUBS", 10)
        for k in range(subs):
            started = time.perf_counter()
            flt = {"authors": [rng.randbytes(32).hex() for _ in range(5)], "limit": 0}
            try:
                self.conn.send(["REQ", f"idle{k}", flt])
                _, end = self.conn.recv_until(ends(f"idle{k}"))
            except Exception as exc:
                fire("REQ", "idle subscribe", started, exception=exc)
                continue
            error = None if end[0] == "EOSE" else RuntimeError(f"CLOSED: {end[2]}")
            fire("REQ", "idle subscribe", started, exception=error)

    @task
    def hold(self) -> None:
        """Wait for anything (pings are answered inside recv); bounded by a 1 s timeout."""
        self.conn.ws.settimeout(1.0)
        try:
            self.conn.ws.recv()
        except websocket.WebSocketTimeoutException:
            return


class QueryUser(NostrUser):
    fixed_count = _env_int("LOCUST_QUERYUSER_USERS", 0)
    wait_time = constant_throughput(_env_float("LOCUST_QUERY_RATE", 5))

    def on_start(self) -> None:
        super().on_start()
        self.manifest = _load_manifest()
        self.rng = random.Random(self.number)
        self.serial = itertools.count()

    @task
    def query(self) -> None:
        serial = next(self.serial)
        shape = QUERY_SHAPES[serial % len(QUERY_SHAPES)]
        flt = make_filter(shape, self.manifest, self.rng)
        sub_id = f"q{serial}"
        started = time.perf_counter()
        try:
            self.conn.send(["REQ", sub_id, flt])
            before, end = self.conn.recv_until(ends(sub_id))
            self.conn.send(["CLOSE", sub_id])
        except Exception as exc:
            fire("REQ", shape, started, exception=exc)
            return
        error = None if end[0] == "EOSE" else RuntimeError(f"CLOSED: {end[2]}")
        count = sum(1 for m in before if m[0] == "EVENT" and m[1] == sub_id)
        fire("REQ", shape, started, length=count, exception=error)
