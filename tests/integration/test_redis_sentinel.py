"""Redis Sentinel failover under live traffic, with real processes.

A master, one replica and three sentinels (quorum 2) on free ports; a relay (2 workers)
configured with the sentinels only. The master is SIGKILLed while a publisher sends events;
the sentinels promote the replica. What is promised (docs/RELIABILITY.md): every acknowledged
event is stored, so a REQ finds it; live delivery resumes on the new master without a relay
restart (events queued while no master answered are delivered live once it does; the few that
the old master took but had not yet replicated may reach subscribers only through a REQ); rate
limits and connection counting use the new master again.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import msgspec
import pytest
import redis
import redis.asyncio as aioredis

from cluster.bus.redis_clients import redis_from_settings
from cluster.config import RedisSettings
from cluster.nostr.signing import Signer
from cluster.relay.ratelimit import ConnectionCounter, RateLimiter, connections_key, redis_client
from cluster.services.ports import free_port, terminate
from cluster.services.redis import RedisServer, find_redis_server
from tests.client import RelayClient, connect
from tests.services import RelayProcess, RelayStarter, record, unique_name

SERVICE = "relaymaster"
SUBSCRIBERS = 4


class _Process:
    """A redis-server (replica or sentinel) with a config file of its own."""

    def __init__(self, directory: Path, name: str, config: str, *, sentinel: bool) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.conf = directory / f"{name}.conf"
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {directory}\n"
            f"logfile {directory / name}.log\n{config}"
        )
        command = [str(find_redis_server()), str(self.conf)]
        if sentinel:
            command.append("--sentinel")
        self.proc: subprocess.Popen[bytes] = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def stop(self) -> None:
        terminate(self.proc, 15, 5)


def _wait(what: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            if callable(check) and check():
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} within {timeout:g}s")


class Topology:
    def __init__(self, directory: Path) -> None:
        self.master = RedisServer(free_port(), directory / "master")
        self.master.start()
        self.replica = _Process(
            directory / "replica",
            "replica",
            f'replicaof 127.0.0.1 {self.master.port}\nsave ""\nappendonly no\n',
            sentinel=False,
        )
        _wait(
            "replica in sync",
            lambda: self.replica.client().info("replication")["master_link_status"] == "up",
            10,
        )
        self.sentinels = [
            _Process(
                directory / f"sentinel{i}",
                "sentinel",
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n",
                sentinel=True,
            )
            for i in range(3)
        ]

        def ready() -> bool:
            for sentinel in self.sentinels:
                state = sentinel.client().sentinel_master(SERVICE)
                if state["num-slaves"] < 1 or state["num-other-sentinels"] < 2:
                    return False
            return True

        _wait("sentinels see the replica and each other", ready, 15)

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def current_master_port(self) -> int:
        return int(self.sentinels[0].client().sentinel_get_master_addr_by_name(SERVICE)[1])

    def stop(self) -> None:
        for process in [*self.sentinels, self.replica]:
            process.stop()
        self.master.stop()


@contextlib.contextmanager
def topology(directory: Path) -> Iterator[Topology]:
    started = Topology(directory)
    try:
        yield started
    finally:
        started.stop()


async def _collect(ws: aiohttp.ClientWebSocketResponse, into: set[str]) -> None:
    while True:
        msg = await ws.receive()
        if msg.type != aiohttp.WSMsgType.TEXT:
            return
        message = msgspec.json.decode(msg.data)
        if message[0] == "EVENT" and message[1] == "live":
            into.add(message[2]["id"])


async def _limits_on(settings: RedisSettings, prefix: str, deadline: float) -> None:
    """A rate-limit decision and a connection count, made in Redis (not the per-worker
    fallback), through the same factory the relay uses (bounded retries)."""
    client = redis_client(settings)
    limiter = RateLimiter(client, prefix=prefix, fallback_workers=1, retry_after=0.2)
    counter = ConnectionCounter(client, prefix=prefix, limit=5, fallback_workers=1, retry_after=0.2)
    try:
        while True:
            assert await limiter.allow("test", "someone", 1000, 60)
            lease = await counter.acquire("192.0.2.1")
            if lease is not None and lease.where == "redis" and limiter.decisions["redis_allowed"]:
                await counter.release(lease)
                return
            if lease is not None:
                await counter.release(lease)
            assert time.monotonic() < deadline, "limits never reached the new master"
            await asyncio.sleep(0.3)
    finally:
        await client.aclose()


@pytest.mark.timeout(90)  # every wait inside is bounded; the run takes about 20 s
async def test_sentinel_failover_loses_no_acknowledged_event(
    start_relay: RelayStarter, tmp_path: Path
) -> None:
    started = time.monotonic()
    prefix = unique_name("sentinel") + ":"
    with topology(tmp_path) as redis_nodes:
        settings = RedisSettings(
            url="redis://ignored.invalid:1/0",
            sentinels=redis_nodes.addresses,
            sentinel_service=SERVICE,
            key_prefix=prefix,
        )
        relay: RelayProcess = start_relay.start(
            REDIS_URL=settings.url,
            RELAY_REDIS__SENTINELS=msgspec.json.encode(settings.sentinels).decode(),
            RELAY_REDIS__SENTINEL_SERVICE=SERVICE,
            RELAY_REDIS__KEY_PREFIX=prefix,
            RELAY_RATE_LIMITS__EXEMPT="[]",
            RELAY_RATE_LIMITS__EVENTS_PER_MINUTE_PER_IP="100000",
            RELAY_RATE_LIMITS__EVENTS_PER_MINUTE_PER_PUBKEY="100000",
        )
        old_port = redis_nodes.master.port
        signer = Signer()
        accepted: list[str] = []
        after_failover: list[str] = []
        async with aiohttp.ClientSession() as session:
            sockets = [await session.ws_connect(relay.url) for _ in range(SUBSCRIBERS)]
            received: list[set[str]] = [set() for _ in sockets]
            for ws in sockets:
                await ws.send_json(["REQ", "live", {"authors": [signer.pubkey]}])
                assert await ws.receive_json(timeout=10) == ["EOSE", "live"]
            collectors = [
                asyncio.create_task(_collect(ws, into))
                for ws, into in zip(sockets, received, strict=True)
            ]
            async with connect(relay.url) as publisher:

                async def send(label: str, into: list[str]) -> None:
                    event = signer.sign(1, label)
                    ok = await publisher.publish(event)
                    assert ok[2] is True, ok
                    into.append(event.id)

                for i in range(30):
                    await send(f"before {i}", accepted)
                    await asyncio.sleep(0.01)
                redis_nodes.master.kill()  # SIGKILL, mid-publishing
                killed = time.monotonic()
                i = 0
                while redis_nodes.current_master_port() == old_port:
                    assert time.monotonic() - killed < 20, "no failover within 20 s"
                    await send(f"during {i}", accepted)
                    i += 1
                    await asyncio.sleep(0.02)
                failover_seconds = time.monotonic() - killed
                # Acknowledged after the promotion: these must arrive live, on every socket.
                for j in range(20):
                    await send(f"after {j}", after_failover)
                    await asyncio.sleep(0.02)
            everything = accepted + after_failover
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while loop.time() < deadline and any(
                not set(after_failover) <= got for got in received
            ):
                await asyncio.sleep(0.1)
            for task in collectors:
                task.cancel()
            for ws in sockets:
                await ws.close()
        for got in received:
            missing_after = set(after_failover) - got
            assert not missing_after, f"{len(missing_after)} post-failover events not live"
        # Nothing acknowledged is lost: what a socket did not get live, a REQ returns.
        # (by ids, 50 at a time: the session's relays cap a REQ at 100 rows)
        stored: set[str] = set()
        async with connect(relay.url) as reader:
            for start in range(0, len(everything), 50):
                ids = everything[start : start + 50]
                stored |= {e["id"] for e in await reader.query("ids", {"ids": ids})}
        assert set(everything) <= stored, f"{len(set(everything) - stored)} acknowledged lost"
        # The relay's own limits write to the new master again (keys removed first, so only
        # writes made after the promotion can bring them back).
        new_master = aioredis.Redis(port=redis_nodes.current_master_port())
        try:
            async for key in new_master.scan_iter(match=f"{prefix}rl:*"):
                await new_master.delete(key)
            conn_key = connections_key(prefix, "127.0.0.1").encode()
            limit_deadline = time.monotonic() + 10
            while True:
                async with connect(relay.url) as again:
                    await send_one(again, signer)
                    keys = {k async for k in new_master.scan_iter(match=f"{prefix}rl:*")}
                if conn_key in keys and keys - {conn_key}:
                    break  # a connection counted and an event rate-limited in the new master
                assert time.monotonic() < limit_deadline, f"limits never recovered: {keys}"
                await asyncio.sleep(0.3)
        finally:
            await new_master.aclose()
        await _limits_on(settings, prefix, time.monotonic() + 10)
        # The cache client (channel states) and the dashboard come from the same factory.
        cache = redis_from_settings(settings, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            await cache.set(f"{prefix}cache-probe", b"1", ex=10)
            assert await cache.get(f"{prefix}cache-probe") == b"1"
        finally:
            await cache.aclose()
    live_missing = sum(len(set(everything) - got) for got in received)
    record(
        "Redis master SIGKILLed, Sentinel failover during publishing",
        sent=len(everything),
        acknowledged=len(everything),
        stored=len(set(everything) & stored),
        lost=len(set(everything) - stored),
        subscribers=len(received),
        failover_seconds=round(failover_seconds, 1),
        not_live_found_by_req=live_missing,
    )
    assert time.monotonic() - started < 60


async def send_one(client: RelayClient, signer: Signer) -> None:
    event = signer.sign(1, "limits probe")
    ok = await client.publish(event)
    assert ok[2] is True, ok
