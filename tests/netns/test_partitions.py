"""The relay across a network: partitions, a slow database link, a lossy client path.

Each test builds its hosts with tests/netns/harness.py (a namespace per relay, PostgreSQL and
Redis in namespaces of their own, the client on the host across the bridge) and checks the
promise of docs/RELIABILITY.md ("Across a network") that the fault puts at risk. Faults that
loopback cannot make: a peer that vanishes silently (blackhole routes: no RST, no ICMP), a
40 ms round trip to the database, a client path that stalls and is cut mid-frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import statistics
import time
from typing import Any

import aiohttp
import msgspec
import orjson
import psycopg
import pytest

from cluster.nostr.event import Event
from cluster.nostr.signing import Signer
from tests.client import connect
from tests.netns.conftest import METRICS_TOKEN, Cluster
from tests.netns.harness import Relay
from tests.services import record

pytestmark = pytest.mark.services


async def _collect(
    ws: aiohttp.ClientWebSocketResponse,
    sub_id: str,
    into: list[str],
    arrivals: dict[str, float] | None = None,
) -> None:
    """Append the id of every live EVENT of `sub_id` until the socket ends (and when it came)."""
    loop = asyncio.get_running_loop()
    while True:
        msg = await ws.receive()
        if msg.type != aiohttp.WSMsgType.TEXT:
            return
        message = orjson.loads(msg.data)
        if message[0] == "EVENT" and message[1] == sub_id:
            into.append(message[2]["id"])
            if arrivals is not None:
                arrivals.setdefault(message[2]["id"], loop.time())


async def _subscribe(
    session: aiohttp.ClientSession, relay: Relay, pubkeys: list[str]
) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(relay.url, heartbeat=None)
    await ws.send_json(["REQ", "live", {"authors": pubkeys}])
    assert await ws.receive_json(timeout=10) == ["EOSE", "live"]
    return ws


async def _stored_ids(relay: Relay, ids: list[str]) -> set[str]:
    """Which of `ids` the database holds, asked through `relay` in slices of 100."""
    found: set[str] = set()
    async with connect(relay.url) as client:
        for start in range(0, len(ids), 100):
            chunk = ids[start : start + 100]
            rows = await client.query(f"s{start}", {"ids": chunk, "limit": len(chunk)})
            found.update(row["id"] for row in rows)
    return found


async def _wait_for(predicate: Any, timeout: float) -> float:
    """Seconds until `predicate()` held (bounded), or the timeout."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < timeout and not predicate():
        await asyncio.sleep(0.05)
    return loop.time() - start


@pytest.mark.timeout(90)
async def test_redis_partition_heals_without_loss_or_repeat(cluster: Cluster) -> None:
    """Instance B loses Redis silently for 9 s while both instances keep publishing: after the
    heal every subscriber on both instances has every event exactly once (the reader resumes at
    its last entry id on the same Redis; B's publisher flushes what it queued)."""
    relay_a = cluster.relay("a")
    relay_b = cluster.relay("b")
    signer_a, signer_b = Signer(), Signer()
    accepted: list[str] = []
    partition_at, heal_at, end_at = 2.0, 11.0, 13.0
    async with aiohttp.ClientSession() as session:
        sockets = [
            await _subscribe(session, relay, [signer_a.pubkey, signer_b.pubkey])
            for relay in (relay_a, relay_b, relay_b)
        ]
        received: list[list[str]] = [[] for _ in sockets]
        on_b: dict[str, float] = {}  # first arrival on B's first subscriber
        collectors = [
            asyncio.create_task(_collect(ws, "live", into, on_b if index == 1 else None))
            for index, (ws, into) in enumerate(zip(sockets, received, strict=True))
        ]
        loop = asyncio.get_running_loop()
        start = loop.time()
        partitioned = healed = False
        during: list[str] = []  # A's events accepted while B was cut off
        healed_at = 0.0
        async with connect(relay_a.url) as pub_a, connect(relay_b.url) as pub_b:
            for i in range(400):  # bounded: about 13 s at 20 events/s per instance
                now = loop.time() - start
                if now >= end_at:
                    break
                if not partitioned and now >= partition_at:
                    cluster.network.partition(relay_b.host, cluster.redis.host)
                    partitioned = True
                if partitioned and not healed and now >= heal_at:
                    cluster.network.heal(relay_b.host, cluster.redis.host)
                    healed = True
                    healed_at = loop.time()
                for publisher, signer in ((pub_a, signer_a), (pub_b, signer_b)):
                    event = signer.sign(1, f"across a partition {i}")
                    ok = await publisher.publish(event)
                    assert ok[2] is True, ok
                    accepted.append(event.id)
                    if partitioned and not healed and publisher is pub_a:
                        during.append(event.id)
                await asyncio.sleep(0.05)
        assert healed, "the loop ended before the partition healed"
        await _wait_for(lambda: all(len(r) >= len(accepted) for r in received), 30)
        await asyncio.sleep(0.5)  # a repeat would arrive right behind the last event
        for task in collectors:
            task.cancel()
        for ws in sockets:
            await ws.close()
    for index, got in enumerate(received):
        missing = set(accepted) - set(got)
        assert not missing and len(got) == len(set(got)), (
            f"subscriber {index}: missing {len(missing)} of {len(accepted)} "
            f"(first at {min(accepted.index(m) for m in missing) if missing else None}), "
            f"repeated {len(got) - len(set(got))}\nA:\n{relay_a.log_tail()}\n"
            f"B:\n{relay_b.log_tail()}"
        )
    early = sum(1 for event_id in during if on_b.get(event_id, float("inf")) < healed_at)
    assert early < len(during) // 2, f"the partition did not hold: {early} of {len(during)}"
    record(
        "Redis partitioned from one instance for 9 s",
        sent=len(accepted),
        acknowledged=len(accepted),
        subscribers=len(received),
        delivered=sum(len(got) for got in received),
        lost=0,
        repeated=0,
        published_on_a_during_partition=len(during),
        delivered_on_b_during_partition=early,
        b_caught_up_after_heal_s=round(max(on_b[i] for i in during) - healed_at, 2),
    )


class Publisher:
    """Sends EVENTs without waiting for answers and records each OK with its arrival time, so
    a relay that stops answering shows as a gap instead of blocking the test."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.sent: dict[str, float] = {}
        self.answers: dict[str, tuple[float, bool, str]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            msg = await self.ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                return
            message = orjson.loads(msg.data)
            if message[0] == "OK":
                self.answers[message[1]] = (loop.time(), bool(message[2]), str(message[3]))

    async def send(self, event: Event) -> None:
        self.sent[event.id] = asyncio.get_running_loop().time()
        await self.ws.send_str(orjson.dumps(["EVENT", msgspec.to_builtins(event)]).decode())

    def unanswered(self) -> set[str]:
        return set(self.sent) - set(self.answers)

    async def close(self) -> None:
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader
        await self.ws.close()


def _first_accepted_after(publisher: Publisher, healed_at: float) -> float | None:
    """Seconds from the heal to the first `OK true` for an EVENT sent after it, if any yet."""
    times = [
        answer[0] - healed_at
        for event_id, answer in publisher.answers.items()
        if answer[1] and publisher.sent[event_id] >= healed_at
    ]
    return min(times) if times else None


@pytest.mark.timeout(120)
async def test_postgres_partition_never_acknowledges_falsely_and_heals(cluster: Cluster) -> None:
    """PostgreSQL's host drops off the network (its link down: packets vanish, no RST) for 8 s
    under steady EVENTs to two instances: one with database.network_timeout_ms = 0 (the OS's
    TCP defaults), one with 3 s (libpq's tcp_user_timeout, connect_timeout and keepalives:
    cluster/store/pool.py network_kwargs; the default is 10 s). Neither acknowledges anything
    it did not store, both accept EVENTs again by themselves after the heal; the bounded one
    answers `error:` during the partition, the unbounded one stays silent until TCP recovers."""
    plain = cluster.relay(
        "c", RELAY_DATABASE__POOL_TIMEOUT="2", RELAY_DATABASE__NETWORK_TIMEOUT_MS="0"
    )
    bounded = cluster.relay(
        "d", RELAY_DATABASE__POOL_TIMEOUT="2", RELAY_DATABASE__NETWORK_TIMEOUT_MS="3000"
    )
    signer = Signer()
    partition_at, heal_at, give_up_at = 2.0, 10.0, 40.0
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        publishers = {
            "plain": Publisher(await session.ws_connect(plain.url, heartbeat=None)),
            "bounded": Publisher(await session.ws_connect(bounded.url, heartbeat=None)),
        }
        start = loop.time()
        marks: dict[str, float] = {}
        recovered: dict[str, float] = {}
        for i in range(1000):  # bounded: 0.1 s apart, at most give_up_at seconds
            now = loop.time() - start
            if now >= give_up_at:
                break
            if "partition" not in marks and now >= partition_at:
                cluster.postgres.host.set_link(False)
                marks["partition"] = now
            if "heal" not in marks and now >= heal_at:
                cluster.postgres.host.set_link(True)
                marks["heal"] = now
            for name, publisher in publishers.items():
                await publisher.send(signer.sign(1, f"pg partition {name} {i}"))
                if "heal" in marks and name not in recovered:
                    accepted_again = _first_accepted_after(publisher, start + marks["heal"])
                    if accepted_again is not None:
                        recovered[name] = accepted_again
            if len(recovered) == len(publishers) and now >= heal_at + 2:
                break
            await asyncio.sleep(0.1)
        await _wait_for(lambda: not any(p.unanswered() for p in publishers.values()), 60)
        for publisher in publishers.values():
            await publisher.close()
    assert "heal" in marks
    figures: dict[str, Any] = {}
    for name, publisher in publishers.items():
        relay = plain if name == "plain" else bounded
        assert not publisher.unanswered(), f"{name}: {len(publisher.unanswered())} never answered"
        acknowledged = [event_id for event_id, a in publisher.answers.items() if a[1]]
        refused = {a[2] for a in publisher.answers.values() if not a[1]}
        assert all(reason.startswith("error:") for reason in refused), refused
        stored = await _stored_ids(relay, list(publisher.sent))
        assert set(acknowledged) <= stored, f"{name}: {len(set(acknowledged) - stored)} false OKs"
        accepted_again = _first_accepted_after(publisher, start + marks["heal"])
        assert accepted_again is not None, f"{name} accepts no EVENT:\n{relay.log_tail()}"
        during = [
            a[0] - publisher.sent[event_id]
            for event_id, a in publisher.answers.items()
            if marks["partition"] <= publisher.sent[event_id] - start < marks["heal"]
        ]
        figures[name] = {
            "sent": len(publisher.sent),
            "acknowledged": len(acknowledged),
            "refused_error": len(publisher.answers) - len(acknowledged),
            "stored": len(stored),
            "lost": len(set(acknowledged) - stored),
            "slowest_answer_s": round(max(during), 2),
            "accepting_again_after_heal_s": round(accepted_again, 2),
        }
    # The bounded URL turns a silent partition into prompt `error:` answers.
    assert figures["bounded"]["refused_error"] > 0, figures
    assert figures["bounded"]["slowest_answer_s"] < 8, figures
    for name, values in figures.items():
        assert values["accepting_again_after_heal_s"] < 20, (name, values)
    record("PostgreSQL host off the network for 8 s", **figures)


def _save_batches(relay: Relay) -> float:
    """Commits so far: the count of relay_db_query_seconds{operation="save_batch"}."""
    text = relay.metrics(METRICS_TOKEN)
    match = re.search(r'relay_db_query_seconds_count\{operation="save_batch"\} ([0-9.e+]+)', text)
    return float(match.group(1)) if match else 0.0


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@pytest.mark.timeout(90)
async def test_group_commit_hides_a_40ms_database_round_trip(cluster: Cluster) -> None:
    """40 ms RTT between an instance and PostgreSQL (20 ms each way in the proxy), 200 EVENTs/s
    over 4 connections for 5 s: events share commits (far fewer commits than events), so the
    median EVENT -> OK stays within a few round trips instead of queueing behind one commit
    per event (which at 40 ms each could not keep up with 200/s at all)."""
    proxy = cluster.proxy("px", (cluster.postgres.host.address, 5432))
    proxy.control(delay_up_ms=20, delay_down_ms=20)
    rtt_ms = 40.0
    through_proxy = f"postgresql://postgres@{proxy.address}:{proxy.port}/postgres"
    relay = cluster.relay("e", database_url=through_proxy)
    async with await psycopg.AsyncConnection.connect(through_proxy) as conn:
        samples = []  # the round trip the relay sees, for the record: SELECT 1 via the proxy
        for _ in range(5):
            began = time.perf_counter()
            await conn.execute("SELECT 1")
            samples.append((time.perf_counter() - began) * 1000)
    measured_rtt = statistics.median(samples)
    assert measured_rtt >= rtt_ms * 0.9, samples  # the delay is really there
    connections, rate, seconds = 4, 200, 5.0
    signer = Signer()
    batches = [
        [signer.sign(1, f"rtt {c} {i}") for i in range(int(rate * seconds / connections))]
        for c in range(connections)
    ]
    commits_before = _save_batches(relay)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        publishers = [
            Publisher(await session.ws_connect(relay.url, heartbeat=None)) for _ in batches
        ]

        async def pace(publisher: Publisher, events: list[Event]) -> None:
            start = loop.time()
            for index, event in enumerate(events):
                delay = start + index * connections / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await publisher.send(event)

        await asyncio.gather(*(pace(p, b) for p, b in zip(publishers, batches, strict=True)))
        await _wait_for(lambda: not any(p.unanswered() for p in publishers), 30)
        for publisher in publishers:
            await publisher.close()
    commits = _save_batches(relay) - commits_before
    latencies = [
        (answer[0] - publisher.sent[event_id]) * 1000
        for publisher in publishers
        for event_id, answer in publisher.answers.items()
    ]
    events = sum(len(b) for b in batches)
    assert len(latencies) == events
    assert all(answer[1] for p in publishers for answer in p.answers.values())
    p50, p95, p99 = (_percentile(latencies, f) for f in (0.5, 0.95, 0.99))
    figures = {
        "events": events,
        "commits": commits,
        "events_per_commit": round(events / max(commits, 1), 1),
        "rtt_ms": round(measured_rtt, 1),
        "p50_ms": round(p50, 1),
        "p95_ms": round(p95, 1),
        "p99_ms": round(p99, 1),
    }
    record("40 ms RTT to PostgreSQL, 200 EVENT/s", **figures)
    assert commits <= events / 4, figures
    assert p50 < 3 * rtt_ms, figures


async def _publish_through(
    url: str, events: list[Event], acked: dict[str, bool], log: list[str], deadline: float
) -> None:
    """Publish `events` over a path that may stall or be cut: up to 10 EVENTs in flight; on a
    closed socket or 4 s without an answer, reconnect and resend every EVENT not yet answered
    (what a well-behaved client does). Bounded by `deadline` and 30 connections."""
    loop = asyncio.get_running_loop()
    for _attempt in range(30):
        waiting = [event for event in events if event.id not in acked]
        if not waiting or loop.time() > deadline:
            return
        try:
            async with aiohttp.ClientSession() as session:
                ws = await asyncio.wait_for(session.ws_connect(url, heartbeat=None), 5)
                in_flight: set[str] = set()
                pending = list(waiting)
                while pending or in_flight:
                    while pending and len(in_flight) < 10:
                        event = pending.pop(0)
                        in_flight.add(event.id)
                        await ws.send_str(
                            orjson.dumps(["EVENT", msgspec.to_builtins(event)]).decode()
                        )
                        await asyncio.sleep(0.02)
                    msg = await ws.receive(timeout=4)
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        raise ConnectionError(f"socket ended: {msg.type}")
                    message = orjson.loads(msg.data)
                    if message[0] == "OK" and message[1] in in_flight:
                        in_flight.discard(message[1])
                        if message[2]:
                            acked[message[1]] = True
                        else:
                            log.append(f"refused: {message[3]}")  # resent on the next round
                await ws.close()
        except (aiohttp.ClientError, ConnectionError, TimeoutError, OSError) as exc:
            log.append(f"reconnect after {type(exc).__name__}: {exc}")
            await asyncio.sleep(0.2)


@pytest.mark.timeout(90)
async def test_stalled_and_cut_client_path_loses_nothing_acknowledged(cluster: Cluster) -> None:
    """Clients reach the relay through a proxy that stalls 2 s, then resets every connection
    mid-frame, twice. Clients resend what got no OK; in the end every event is acknowledged,
    and every acknowledged event is stored (checked directly, not through the proxy)."""
    relay = cluster.relay("f")
    proxy = cluster.proxy("lossy", (relay.host.address, relay.port))
    url = f"ws://{proxy.address}:{proxy.port}"
    signer = Signer()
    clients = [[signer.sign(1, f"lossy {c} {i}") for i in range(200)] for c in range(3)]
    acked: dict[str, bool] = {}
    log: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 45

    async def chaos() -> None:
        await asyncio.sleep(0.7)
        proxy.control(stall=2.0)
        await asyncio.sleep(3.0)
        proxy.control(cut=True)
        await asyncio.sleep(1.2)
        proxy.control(cut=True)

    await asyncio.gather(
        chaos(), *(_publish_through(url, events, acked, log, deadline) for events in clients)
    )
    state = proxy.control(stats=True)
    every = [event.id for events in clients for event in events]
    assert set(acked) == set(every), f"{len(set(every) - set(acked))} never acknowledged: {log}"
    stored = await _stored_ids(relay, every)
    assert set(acked) <= stored, f"{len(set(acked) - stored)} acknowledged but not stored"
    reconnects = sum(1 for line in log if line.startswith("reconnect"))
    # Each client lost at least one connection, and cuts fell in the middle of a chunk.
    assert reconnects >= len(clients) and state["cut_mid_frame"] >= 1, (state, log)
    record(
        "client path stalled 2 s and cut mid-frame twice",
        sent=len(every),
        acknowledged=len(acked),
        stored=len(stored),
        lost=len(set(acked) - stored),
        reconnects=reconnects,
        connections_cut=state["cut"],
        cut_mid_frame=state["cut_mid_frame"],
    )
