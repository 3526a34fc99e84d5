"""A connection's one byte budget and its drain deadline, with a fake socket: what is queued
(outbox and live events held during a REQ) is counted, a live event past the budget on a
backed-up socket closes with 1008, a REQ waits for room, a socket that takes nothing closes."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any, cast

import msgspec
import pytest

from cluster.config import LimitSettings, Settings
from cluster.nostr.event import Event
from cluster.nostr.signing import Signer
from cluster.relay.access import AccessState
from cluster.relay.budgets import AddressBudgets
from cluster.relay.connection import (
    HARD_CAP_FACTOR,
    SLOW_CLIENT_REASON,
    STALLED_REASON,
    Connection,
)
from cluster.relay.context import RelayContext
from cluster.relay.deflate import ThresholdDeflateResponse
from cluster.relay.outbound import TRANSPORT_BACKED_UP
from cluster.relay.subscriptions import Subscription, SubscriptionIndex

BUDGET = 10_000


class FakeTransport:
    """A transport whose kernel takes `kernel_room` more bytes, then buffers the rest."""

    def __init__(self, kernel_room: int = 1 << 30) -> None:
        self.kernel_room = kernel_room
        self.buffered = 0
        self.written = 0
        self.aborted = False

    def write(self, data: bytes) -> None:
        taken = min(len(data), self.kernel_room)
        self.kernel_room -= taken
        self.written += taken
        self.buffered += len(data) - taken

    def drain(self, size: int) -> None:
        """The client read `size` bytes: they leave our buffer."""
        moved = min(size, self.buffered)
        self.buffered -= moved
        self.written += moved

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


class FakeWebSocket:
    def __init__(self) -> None:
        self.closed = False
        self.close_code: int | None = None
        self.close_message = b""

    def compresses(self, size: int) -> bool:
        return False

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        self.closed = True
        self.close_code = code
        self.close_message = message
        return True


def connection(transport: FakeTransport, *, drain_timeout: float = 30.0) -> Connection:
    settings = msgspec.structs.replace(Settings(), limits=LimitSettings(max_outbound_bytes=BUDGET))
    context = SimpleNamespace(
        settings=settings,
        access=SimpleNamespace(may_see=lambda state, event: True, must_screen_dms=lambda f: False),
        stats=SimpleNamespace(delivered=lambda: None),
        index=SubscriptionIndex(),
        budgets=AddressBudgets(settings),
    )
    conn = Connection(
        cast(ThresholdDeflateResponse, FakeWebSocket()),
        cast(RelayContext, context),
        AccessState(client_ip="203.0.113.7", exempt=False, rate_subject="203.0.113.7"),
        dispatch=cast(Any, None),
        transport=cast(asyncio.Transport, transport),
    )
    conn.drain_timeout = conn.outbound.drain_timeout = drain_timeout
    return conn


def event(size: int) -> tuple[Event, bytes]:
    signed = Signer().sign(1, "x" * size)
    return signed, msgspec.json.encode(signed)


def subscribe(conn: Connection) -> Subscription:
    subscription = Subscription(conn, "s", ())
    conn.add_subscription(subscription)
    return subscription


def ws_of(conn: Connection) -> FakeWebSocket:
    return cast(FakeWebSocket, conn.ws)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_held_live_events_count_against_the_budget_and_are_released() -> None:
    conn = connection(FakeTransport())
    subscription = subscribe(conn)  # held until its REQ has sent EOSE
    signed, raw = event(1000)
    conn.deliver(subscription, signed, raw)
    assert conn.queued_bytes > 1000
    conn.send(b"x" * 500)
    assert conn.queued_bytes > 1500  # the held event and the answer
    assert [event_id for event_id, _ in conn.take_held(subscription)] == [signed.id]
    assert conn.queued_bytes == 500


async def test_held_live_events_past_the_budget_close_a_backed_up_client() -> None:
    transport = FakeTransport()
    transport.buffered = TRANSPORT_BACKED_UP  # the client stopped reading
    conn = connection(transport)
    subscription = subscribe(conn)
    for _ in range(BUDGET // 1000 + 1):
        signed, raw = event(1000)
        conn.deliver(subscription, signed, raw)
    await settle()
    assert conn.closing and conn.close_reason == SLOW_CLIENT_REASON
    assert ws_of(conn).close_code == 1008
    assert conn.queued_bytes <= BUDGET + 2000  # nothing past the budget was kept


async def test_live_burst_on_a_reading_socket_is_kept_up_to_the_hard_cap() -> None:
    conn = connection(FakeTransport())  # the socket takes everything: not the client's fault
    subscription = subscribe(conn)
    conn.take_held(subscription)  # live from now on
    signed, raw = event(1000)
    sent = 0
    while not conn.closing:
        conn.deliver(subscription, signed, raw)
        sent += 1
        assert sent < 10 * HARD_CAP_FACTOR * BUDGET // 1000, "the hard cap must close it"
    assert conn.queued_bytes <= HARD_CAP_FACTOR * BUDGET
    assert sent > 2 * BUDGET // 1000  # well past the budget before the hard cap


async def test_a_req_waits_for_room_until_the_writer_drains() -> None:
    transport = FakeTransport()
    conn = connection(transport)
    conn.send(b"y" * BUDGET)
    waiter = asyncio.create_task(conn.wait_for_room())
    await settle()
    assert not waiter.done()  # the outbox is at the budget
    writer = asyncio.create_task(conn.write_loop())
    room = await asyncio.wait_for(waiter, 2)
    assert room > 0 and conn.queued_bytes == 0
    assert transport.written >= BUDGET
    writer.cancel()


async def test_a_socket_that_takes_nothing_is_closed_after_the_drain_timeout() -> None:
    transport = FakeTransport(kernel_room=0)  # the client never reads
    conn = connection(transport, drain_timeout=0.3)
    writer = asyncio.create_task(conn.write_loop())
    started = time.monotonic()
    for _ in range(50):
        conn.send(b"z" * 4000)  # a REQ's stored rows
    await asyncio.wait_for(writer, 5)
    assert 0.3 <= time.monotonic() - started < 2.0
    assert conn.close_reason == STALLED_REASON
    await settle()
    assert ws_of(conn).close_code == 1008
    assert conn.queued_bytes == 0  # dropped at once, not kept for the client


async def test_bytes_left_in_the_transport_alone_also_count_as_not_draining() -> None:
    transport = FakeTransport(kernel_room=100)
    conn = connection(transport, drain_timeout=0.3)
    writer = asyncio.create_task(conn.write_loop())
    conn.send(b"w" * 1000)  # the outbox empties into the transport's buffer
    await asyncio.wait_for(writer, 5)
    assert conn.close_reason == STALLED_REASON


async def test_a_slow_but_steady_reader_is_not_closed() -> None:
    transport = FakeTransport(kernel_room=0)
    conn = connection(transport, drain_timeout=0.3)
    writer = asyncio.create_task(conn.write_loop())
    for _ in range(40):
        conn.send(b"v" * 10_000)
    deadline = time.monotonic() + 1.2  # four drain timeouts
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        transport.drain(8_000)  # reads a little, often
    assert not conn.closing and not writer.done()
    writer.cancel()


@pytest.mark.parametrize("held", [True, False])
async def test_dropping_a_subscription_releases_its_held_bytes(held: bool) -> None:
    conn = connection(FakeTransport())
    subscription = subscribe(conn)
    if not held:
        conn.take_held(subscription)
    signed, raw = event(2000)
    conn.deliver(subscription, signed, raw)
    conn.drop_subscription("s")
    if held:
        assert conn.queued_bytes == 0
    else:  # already in the outbox: it still goes out
        assert conn.queued_bytes > 2000
