"""Slow clients: a subscriber that stops reading is closed with 1008 instead of growing memory;
an idle connection without subscriptions is closed after the idle timeout."""

from __future__ import annotations

import asyncio

import aiohttp
import msgspec
import pytest

from cluster.nostr.signing import Signer
from tests.client import connect
from tests.services import RelayProcess, RelayStarter


@pytest.fixture
def tight_relay(start_relay: RelayStarter) -> RelayProcess:
    return start_relay.start(
        workers=1,
        RELAY_LIMITS__MAX_CONTENT_LENGTH="60000",
        RELAY_LIMITS__MAX_MESSAGE_BYTES="131072",
        # ~20 of these 50 KB events; keep the cap several times the largest event you accept
        RELAY_LIMITS__MAX_OUTBOUND_BYTES="1000000",
        RELAY_NETWORK__IDLE_TIMEOUT="2",
    )


async def test_subscriber_that_cannot_keep_up_is_closed_with_1008(
    tight_relay: RelayProcess,
) -> None:
    signer = Signer()
    big = "x" * 50_000
    async with aiohttp.ClientSession() as session:
        slow = await session.ws_connect(tight_relay.url)
        await slow.send_json(["REQ", "firehose", {"authors": [signer.pubkey]}])
        assert await slow.receive_json(timeout=10) == ["EOSE", "firehose"]
        async with connect(tight_relay.url) as healthy, connect(tight_relay.url) as publisher:
            await healthy.send(["REQ", "h", {"authors": [signer.pubkey]}])
            assert await healthy.receive() == ["EOSE", "h"]

            async def read_everything() -> int:
                received = 0
                while received < 400:  # the healthy subscriber gets everything
                    message = await healthy.receive()
                    received += message[0] == "EVENT"
                return received

            reader = asyncio.create_task(read_everything())
            # The slow socket is never read from here on: its buffers fill, then ours.
            for i in range(400):
                event = signer.sign(1, f"{i} {big}")
                await publisher.send(["EVENT", msgspec.to_builtins(event)])
                if i % 50 == 49:
                    await asyncio.sleep(0.05)
            oks = 0
            while oks < 400:
                message = await publisher.receive()
                oks += message[0] == "OK" and message[2] is True
            assert await asyncio.wait_for(reader, 30) == 400
        # Drain what the slow socket had buffered; it must end in a 1008 close.
        close = None
        for _ in range(1000):
            msg = await slow.receive(timeout=10)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                close = (slow.close_code, msg.extra)
                break
        assert close is not None and close[0] == 1008, close
        assert close[1] == "Cannot keep up with event stream"
        await slow.close()


async def test_idle_connection_without_subscriptions_is_closed(tight_relay: RelayProcess) -> None:
    async with aiohttp.ClientSession() as session:
        idle = await session.ws_connect(tight_relay.url)
        subscribed = await session.ws_connect(tight_relay.url)
        await subscribed.send_json(["REQ", "keep", {"kinds": [1], "limit": 0}])
        assert await subscribed.receive_json(timeout=10) == ["EOSE", "keep"]
        msg = await idle.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.CLOSE and idle.close_code == 1001
        await asyncio.sleep(1)
        assert not subscribed.closed  # listening subscribers are not idle
        await subscribed.close()
        await idle.close()
