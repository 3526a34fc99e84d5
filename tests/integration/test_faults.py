"""Failures with real processes: Redis restarted under live traffic, a worker SIGKILLed,
graceful shutdown on SIGTERM. Each test owns the processes it breaks."""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
import msgspec
import pytest

from cluster.nostr.signing import Signer
from cluster.services.redis import RedisServer
from tests.client import connect
from tests.services import RelayProcess, RelayStarter, record


@pytest.fixture
def own_relay(start_relay: RelayStarter, own_redis: RedisServer) -> RelayProcess:
    return start_relay.start(REDIS_URL=own_redis.url())


async def _collect(ws: aiohttp.ClientWebSocketResponse, sub_id: str, into: list[str]) -> None:
    while True:
        msg = await ws.receive()
        if msg.type != aiohttp.WSMsgType.TEXT:
            return
        message = msgspec.json.decode(msg.data)
        if message[0] == "EVENT" and message[1] == sub_id:
            into.append(message[2]["id"])


async def test_redis_restart_loses_no_live_event(
    own_relay: RelayProcess, own_redis: RedisServer
) -> None:
    """Subscribers on both workers receive every event accepted while Redis was down, once."""
    signer = Signer()
    async with aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(own_relay.url) for _ in range(8)]
        received: list[list[str]] = [[] for _ in sockets]
        for ws in sockets:
            await ws.send_json(["REQ", "r", {"authors": [signer.pubkey]}])
            assert await ws.receive_json(timeout=10) == ["EOSE", "r"]
        collectors = [
            asyncio.create_task(_collect(ws, "r", into))
            for ws, into in zip(sockets, received, strict=True)
        ]
        accepted: list[str] = []
        async with connect(own_relay.url) as publisher:
            for round_number in range(3):
                for i in range(20):
                    event = signer.sign(1, f"round {round_number} event {i}")
                    ok = await publisher.publish(event)
                    assert ok[2] is True, ok
                    accepted.append(event.id)
                    if round_number == 1 and i == 5:
                        own_redis.kill()  # Redis gone in the middle of the round
                    await asyncio.sleep(0.01)
                if round_number == 1:
                    own_redis.start()  # a new, empty Redis on the same port
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while loop.time() < deadline and any(len(r) < len(accepted) for r in received):
            await asyncio.sleep(0.1)
        for task in collectors:
            task.cancel()
        for ws in sockets:
            await ws.close()
    for got in received:
        assert sorted(got) == sorted(accepted), (
            f"missing {len(set(accepted) - set(got))}, repeated {len(got) - len(set(got))}"
        )
    record(
        "Redis killed and restarted during publishing",
        sent=len(accepted),
        acknowledged=len(accepted),
        subscribers=len(received),
        delivered=sum(len(got) for got in received),
        lost=sum(len(set(accepted) - set(got)) for got in received),
        repeated=sum(len(got) - len(set(got)) for got in received),
    )


async def _sockets_on_every_worker(
    session: aiohttp.ClientSession, relay: RelayProcess, limit: int = 40
) -> dict[int, list[aiohttp.ClientWebSocketResponse]]:
    """Open sockets until each worker holds at least one (bounded); {worker pid: sockets}."""
    by_worker: dict[int, list[aiohttp.ClientWebSocketResponse]] = {}
    workers = set(relay.worker_pids())
    for _ in range(limit):
        ws = await session.ws_connect(relay.url)
        await ws.send_json(["COUNT", "warm", {"kinds": [1], "limit": 1}])
        await ws.receive_json(timeout=10)  # the server side is accepted and owned now
        client_port = ws.get_extra_info("sockname")[1]
        owner = relay.owners_of_client_ports()[client_port]
        by_worker.setdefault(owner, []).append(ws)
        if set(by_worker) >= workers:
            return by_worker
    raise AssertionError(f"{limit} sockets never reached every worker: {list(by_worker)}")


async def test_sigkill_of_one_worker_loses_no_acknowledged_event(own_relay: RelayProcess) -> None:
    signer = Signer()
    accepted: list[str] = []
    async with aiohttp.ClientSession() as session:
        by_worker = await _sockets_on_every_worker(session, own_relay)
        victim, survivor = sorted(by_worker)[:2]
        for index, ws in enumerate(ws for sockets in by_worker.values() for ws in sockets):
            for round_number in range(20):
                event = signer.sign(1, f"before kill {index} {round_number}")
                await ws.send_json(["EVENT", msgspec.to_builtins(event)])
                assert (await ws.receive_json(timeout=10))[:3] == ["OK", event.id, True]
                accepted.append(event.id)
        os.kill(victim, signal.SIGKILL)
        for ws in by_worker[victim]:
            message = await ws.receive(timeout=10)
            assert message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            )
        for index, ws in enumerate(by_worker[survivor]):  # the other worker's clients see nothing
            event = signer.sign(1, f"after kill {index}")
            await ws.send_json(["EVENT", msgspec.to_builtins(event)])
            assert (await ws.receive_json(timeout=10))[:3] == ["OK", event.id, True]
            accepted.append(event.id)
        for sockets in by_worker.values():
            for ws in sockets:
                await ws.close()
    own_relay.wait_healthy(30)  # gunicorn replaced the worker
    async with connect(own_relay.url) as client:
        await client.send(["COUNT", "k", {"authors": [signer.pubkey]}])
        assert await client.receive() == ["COUNT", "k", {"count": len(accepted)}]
        stored = await client.query("k", {"ids": accepted[:100], "limit": 100})
    assert sorted(e["id"] for e in stored) == sorted(accepted[:100])
    record(
        "worker SIGKILL (free events)",
        sent=len(accepted),
        acknowledged=len(accepted),
        stored=len(accepted),  # COUNT of the author's events equals what was acknowledged
        lost=0,
    )


async def test_sigterm_answers_received_events_then_closes_with_1001(
    own_relay: RelayProcess,
) -> None:
    signer = Signer()
    events = [signer.sign(1, f"in flight {i}") for i in range(50)]
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(own_relay.url)
        for event in events:
            await ws.send_json(["EVENT", msgspec.to_builtins(event)])
        assert own_relay.process is not None
        own_relay.process.send_signal(signal.SIGTERM)
        oks: dict[str, bool] = {}
        close_code = None
        while True:
            msg = await ws.receive(timeout=30)
            if msg.type == aiohttp.WSMsgType.TEXT:
                message = msgspec.json.decode(msg.data)
                if message[0] == "OK":
                    oks[message[1]] = message[2]
            else:
                close_code = ws.close_code
                break
        await ws.close()
    assert own_relay.process.wait(30) == 0
    # Every EVENT the relay read was answered; those it answered "true" are durable.
    assert close_code == 1001
    assert len(oks) == len(events)
    own_relay.start()
    async with connect(own_relay.url) as client:
        stored = {e["id"] for e in await client.query("s", {"authors": [signer.pubkey]})}
    assert {event_id for event_id, ok in oks.items() if ok} <= stored
    acknowledged = {event_id for event_id, ok in oks.items() if ok}
    record(
        "SIGTERM drain",
        sent=len(events),
        answered=len(oks),
        acknowledged=len(acknowledged),
        stored=len(stored & {e.id for e in events}),
        lost=len(acknowledged - stored),
    )
