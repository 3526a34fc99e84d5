"""Invalid EVENTs are cheap to refuse and counted: a client that keeps sending them is slowed,
then closed with 1008, per connection and per address; other addresses are untouched."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import msgspec
import pytest

from cluster.nostr.event import Event
from cluster.nostr.signing import Signer
from tests.client import RelayClient
from tests.services import RelayProcess, RelayStarter

CLOSE_TIMEOUT = 10.0


@asynccontextmanager
async def connect_from(url: str, source: str) -> AsyncIterator[RelayClient]:
    """A WebSocket whose source address is `source` (loopback is a whole /8)."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.ws_connect(url, autoping=True) as ws,
    ):
        yield RelayClient(ws)


def forged(signer: Signer, n: int) -> dict[str, Any]:
    """A well-formed event whose signature does not verify."""
    event = signer.sign(1, f"forged {n}")
    bad: dict[str, Any] = msgspec.to_builtins(event)
    bad["sig"] = ("0" if event.sig[0] != "0" else "1") + event.sig[1:]
    return bad


async def send_until_closed(client: RelayClient, signer: Signer, count: int) -> tuple[int, int]:
    """Send up to `count` forged EVENTs, one at a time; (OK false answers, close code)."""
    refused = 0
    for n in range(count):
        try:
            await client.send(["EVENT", forged(signer, n)])
            message = await client.ws.receive(timeout=CLOSE_TIMEOUT)
        except (ConnectionResetError, RuntimeError):
            break
        if message.type != aiohttp.WSMsgType.TEXT:
            break
        answer = msgspec.json.decode(message.data)
        assert answer[0] == "OK" and answer[2] is False and answer[3].startswith("invalid:")
        refused += 1
    if not client.ws.closed:
        await asyncio.wait_for(client.ws.receive(), CLOSE_TIMEOUT)
    return refused, client.ws.close_code or 0


@pytest.fixture
def strict_invalid_relay(start_relay: RelayStarter) -> RelayProcess:
    return start_relay.start(
        workers=1,
        RELAY_RATE_LIMITS__EXEMPT="[]",
        RELAY_RATE_LIMITS__INVALID_EVENTS_PER_CONNECTION="12",
        RELAY_RATE_LIMITS__INVALID_EVENTS_PER_MINUTE_PER_IP="1000",
        RELAY_RATE_LIMITS__EVENTS_PER_MINUTE_PER_IP="1000",
    )


async def test_a_connection_that_keeps_sending_invalid_events_is_closed(
    strict_invalid_relay: RelayProcess,
) -> None:
    signer = Signer()
    async with connect_from(strict_invalid_relay.url, "127.0.1.1") as client:
        refused, code = await send_until_closed(client, signer, 40)
    assert refused == 13  # each one answered, then the 13th closes the socket
    assert code == aiohttp.WSCloseCode.POLICY_VIOLATION
    # The same address may reconnect (the per-connection count starts again), and valid
    # events are accepted as ever.
    async with connect_from(strict_invalid_relay.url, "127.0.1.1") as client:
        ok = await client.publish(signer.sign(1, "valid after all"))
        assert ok[2] is True


async def test_an_address_over_its_invalid_budget_is_closed_others_are_not(
    start_relay: RelayStarter,
) -> None:
    relay = start_relay.start(
        workers=1,
        RELAY_RATE_LIMITS__EXEMPT="[]",
        RELAY_RATE_LIMITS__INVALID_EVENTS_PER_CONNECTION="0",
        RELAY_RATE_LIMITS__INVALID_EVENTS_PER_MINUTE_PER_IP="5",
        RELAY_RATE_LIMITS__EVENTS_PER_MINUTE_PER_IP="1000",
    )
    attacker, honest = Signer(), Signer()
    async with connect_from(relay.url, "127.0.1.2") as client:
        refused, code = await send_until_closed(client, attacker, 20)
    assert (refused, code) == (6, aiohttp.WSCloseCode.POLICY_VIOLATION)
    # A new connection from the same address: its next invalid event closes it at once.
    async with connect_from(relay.url, "127.0.1.2") as client:
        assert await send_until_closed(client, attacker, 5) == (1, 1008)
    # Another address is untouched.
    async with connect_from(relay.url, "127.0.1.3") as client:
        assert (await client.publish(honest.sign(1, "hello")))[2] is True


async def test_invalid_events_count_against_the_address_event_budget(
    start_relay: RelayStarter,
) -> None:
    """Refused for a bad signature or not, every EVENT is counted before it is verified."""
    relay = start_relay.start(
        workers=1,
        RELAY_RATE_LIMITS__EXEMPT="[]",
        RELAY_RATE_LIMITS__EVENTS_PER_MINUTE_PER_IP="4",
        RELAY_RATE_LIMITS__INVALID_EVENTS_PER_MINUTE_PER_IP="0",
        RELAY_RATE_LIMITS__INVALID_EVENTS_PER_CONNECTION="0",
    )
    signer = Signer()
    async with connect_from(relay.url, "127.0.1.4") as client:
        for n in range(4):
            await client.send(["EVENT", forged(signer, n)])
            assert (await client.receive())[3].startswith("invalid:")
        valid: Event = signer.sign(1, "one too many")
        answer = await client.publish(valid)
        assert answer[2] is False and answer[3].startswith("rate-limited:")
