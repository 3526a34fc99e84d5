"""One Connection per WebSocket: the socket, one read loop, the outbound queue and the one
writer task that owns every send.

The connection knows nothing of the verbs: it decodes each message and hands the typed command
to the dispatcher it was given (cluster/relay/websocket.py), so the path only ever points down.
Outbound data waits in one ordered queue. Answers to the client's own requests apply
backpressure to its reading (we stop reading while too much is queued); live events pushed by
others cannot wait, so their queued bytes are capped and a client that cannot keep up is closed
with 1008 instead of growing memory.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import WSCloseCode, WSMsgType

from cluster import metrics
from cluster.nostr.event import Event
from cluster.nostr.messages import (
    ClosedRefusal,
    Command,
    EventCommand,
    NoticeRefusal,
    OkRefusal,
    Refusal,
    auth_challenge_message,
    closed_message,
    decode_client_message,
    event_message,
    notice_message,
    ok_message,
)
from cluster.nostr.rejection import Prefix, Rejection
from cluster.relay.access import AccessState
from cluster.relay.context import RelayContext
from cluster.relay.deflate import ThresholdDeflateResponse
from cluster.relay.frames import text_frames
from cluster.relay.ordering import Line
from cluster.relay.subscriptions import Subscription

log = logging.getLogger(__name__)

OWN_HIGH_WATER = 256 * 1024
REFUSALS = (NoticeRefusal, OkRefusal, ClosedRefusal)
_serials = itertools.count()
SLOW_CLIENT_REASON = "Cannot keep up with event stream"
PENDING_LIVE_MAX = 10_000
HARD_CAP_FACTOR = 16
TRANSPORT_BACKED_UP = 64 * 1024
WRITE_BATCH_BYTES = 64 * 1024
WRITABLE_POLL = 0.005

Dispatcher = Callable[["Connection", Command], Awaitable[None]]
"""Acts on one decoded command; the read loop awaits it before reading the next message."""


class ConnectionRegistry:
    """The worker's open connections, so shutdown can drain and close each of them."""

    def __init__(self) -> None:
        self._open: set[Connection] = set()

    def add(self, connection: Connection) -> None:
        self._open.add(connection)

    def discard(self, connection: Connection) -> None:
        self._open.discard(connection)

    def snapshot(self) -> list[Connection]:
        return list(self._open)

    def __len__(self) -> int:
        return len(self._open)


class Connection:
    def __init__(
        self,
        ws: ThresholdDeflateResponse,
        context: RelayContext,
        access: AccessState,
        dispatch: Dispatcher,
        transport: asyncio.Transport | None = None,
    ) -> None:
        self.ws = ws
        self._dispatch = dispatch
        self.serial = next(_serials)  # picks the connection's group-commit lane
        self.transport = transport
        self.context = context
        self.access = access
        self.subscriptions: dict[str, Subscription] = {}
        # Live events that arrive while a subscription's stored events are still being sent.
        self.pending_live: dict[Subscription, list[tuple[str, bytes]]] = {}
        self._outbox: deque[tuple[bytes, bool]] = deque()
        self._queued_bytes = 0
        self._live_bytes = 0
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._closing = False
        # EVENTs in flight at once on this connection, and the line that keeps their order.
        self.inflight = asyncio.Semaphore(context.settings.limits.max_inflight_events)
        self.line = Line()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.close_reason = "client closed"

    # ---- sending ----------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue an answer to this client's own request (ordered with everything else)."""
        self._enqueue(data, live=False)

    async def send_and_wait(self, data: bytes) -> None:
        """Queue an answer and wait while too much is queued: backpressure on a big REQ."""
        self._enqueue(data, live=False)
        if self._queued_bytes > OWN_HIGH_WATER:
            self._drained.clear()
            await self._drained.wait()

    def deliver(self, subscription: Subscription, event: Event, event_json: bytes) -> None:
        """Live delivery from the subscription index (never blocks the caller)."""
        if self.subscriptions.get(subscription.sub_id) is not subscription:
            return
        if not self.context.access.may_see(self.access, event):
            return
        if subscription.already_sent(event.id, time.monotonic()):
            return
        message = event_message(subscription.sub_id, event_json)
        pending = self.pending_live.get(subscription)
        if pending is not None:
            if len(pending) >= PENDING_LIVE_MAX:
                self.abort(WSCloseCode.POLICY_VIOLATION, SLOW_CLIENT_REASON)
                return
            pending.append((event.id, message))
            return
        self.context.stats.delivered()
        self._enqueue(message, live=True)

    def _enqueue(self, data: bytes, *, live: bool) -> None:
        if self._closing:
            return
        if live and self._cannot_keep_up(len(data)):
            self.abort(WSCloseCode.POLICY_VIOLATION, SLOW_CLIENT_REASON)
            return
        self._outbox.append((data, live))
        self._queued_bytes += len(data)
        if live:
            self._live_bytes += len(data)
        self._wakeup.set()

    def _cannot_keep_up(self, incoming: int) -> bool:
        """Past the cap, but only the client's fault if the socket itself is backed up.

        A burst our own event loop has not written out yet is not the client being slow;
        a full kernel/transport buffer is. A hard cap still bounds memory either way.
        """
        limit = self.context.settings.limits.max_outbound_bytes
        queued = self._live_bytes + incoming
        if queued <= limit:
            return False
        if queued > HARD_CAP_FACTOR * limit:
            return True
        transport = self.transport
        return transport is None or transport.get_write_buffer_size() >= TRANSPORT_BACKED_UP

    async def write_loop(self) -> None:
        """The only place that writes data frames to the socket.

        Everything queued that goes out uncompressed is framed here and written with one
        transport write; a message that will be compressed goes through aiohttp's writer (its
        compression context must see every compressed message, in order).
        """
        ws = self.ws
        transport = self.transport
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._outbox:
                try:
                    if transport is None or ws.compresses(len(self._outbox[0][0])):
                        data, live = self._outbox.popleft()
                        await ws.send_frame(data, WSMsgType.TEXT)
                        self._sent(len(data), len(data) if live else 0)
                    else:
                        self._write_plain(transport)
                        await self._writable(transport)
                except (ConnectionError, RuntimeError):
                    self._closing = True
                    self._outbox.clear()
                    self._drained.set()
                    return
            self._drained.set()

    def _write_plain(self, transport: asyncio.Transport) -> None:
        """Frame the queued messages up to the first one that will be compressed (or
        WRITE_BATCH_BYTES), and write them at once."""
        if self.ws.closed or transport.is_closing():
            raise ConnectionResetError("the WebSocket is closing")
        outbox = self._outbox
        ws = self.ws
        batch: list[bytes] = []
        size = live_size = 0
        while outbox and size < WRITE_BATCH_BYTES and not ws.compresses(len(outbox[0][0])):
            data, live = outbox.popleft()
            batch.append(data)
            size += len(data)
            if live:
                live_size += len(data)
        transport.write(text_frames(batch))
        self._sent(size, live_size)

    def _sent(self, size: int, live_size: int) -> None:
        self._queued_bytes -= size
        self._live_bytes -= live_size
        if self._queued_bytes <= OWN_HIGH_WATER // 2:
            self._drained.set()

    async def _writable(self, transport: asyncio.Transport) -> None:
        """Wait while the kernel and transport buffers are full: a slow reader is not fed
        faster than it reads (and `_cannot_keep_up` sees the backed-up transport)."""
        while transport.get_write_buffer_size() >= TRANSPORT_BACKED_UP:
            if transport.is_closing():
                raise ConnectionResetError("the WebSocket is closing")
            await asyncio.sleep(WRITABLE_POLL)

    async def flush(self, timeout: float) -> None:
        """Wait (bounded) until everything queued has been written."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._outbox and not self._closing and loop.time() < deadline:
            await asyncio.sleep(0.01)

    def abort(self, code: int, reason: str) -> None:
        """Close from inside (slow client, shutdown): stop queuing and close the socket."""
        if self._closing:
            return
        self._closing = True
        self.close_reason = reason
        self._outbox.clear()
        self._drained.set()
        task = asyncio.create_task(self.ws.close(code=code, message=reason.encode()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- answering ---------------------------------------------------------------------------

    def ok(self, event_id: str, accepted: bool, message: str) -> None:
        """NIP-01 OK, counted by its prefix."""
        self.context.stats.count_ok(message)
        self.send(ok_message(event_id, accepted, message))

    def refuse_event(self, event_id: str, rejection: Rejection) -> None:
        """OK false; an `auth-required:` answer comes after our NIP-42 challenge."""
        if rejection.prefix is Prefix.AUTH_REQUIRED:
            self.offer_auth()
        self.ok(event_id, False, rejection.text)

    def refuse_subscription(self, sub_id: str, rejection: Rejection) -> None:
        """CLOSED for a REQ or COUNT; `auth-required:` comes after our NIP-42 challenge."""
        if rejection.prefix is Prefix.AUTH_REQUIRED:
            self.offer_auth()
        self.send(closed_message(sub_id, rejection.text))

    def refuse(self, refusal: Refusal) -> None:
        """The answer to a message that did not decode into a command."""
        match refusal:
            case NoticeRefusal():
                self.send(notice_message(refusal.message))
            case OkRefusal():
                self.ok(refusal.event_id, False, refusal.rejection.text)
            case ClosedRefusal():
                # CLOSED ends the subscription: a refused REQ also ends an open one with its id.
                self.drop_subscription(refusal.sub_id)
                self.refuse_subscription(refusal.sub_id, refusal.rejection)

    def offer_auth(self) -> None:
        """Send our NIP-42 challenge (once): before the first `auth-required:` answer."""
        if not self.access.challenge_sent:
            self.access.challenge_sent = True
            self.send(auth_challenge_message(self.access.challenge))

    # ---- reading ----------------------------------------------------------------------------

    async def read_loop(self) -> None:
        """Decode each message and dispatch it, in the order the client sent them."""
        ws = self.ws
        idle_timeout = self.context.settings.network.idle_timeout
        while not self._closing:
            try:
                msg = await ws.receive(timeout=idle_timeout)
            except TimeoutError:
                if self.subscriptions:
                    continue
                self.abort(WSCloseCode.GOING_AWAY, "idle timeout")
                break
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                break
            if msg.type == WSMsgType.ERROR:
                self.close_reason = f"protocol error: {ws.exception()}"
                break
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            command = decode_client_message(msg.data, self.context.limits)
            if isinstance(command, REFUSALS):
                self.refuse(command)
            elif self.context.shutting_down:
                self._refuse_during_shutdown(command)
            else:
                await self._dispatch(self, command)

    def _refuse_during_shutdown(self, command: Command) -> None:
        """Every EVENT still gets an answer while the worker drains: retry elsewhere."""
        if isinstance(command, EventCommand):
            self.ok(command.event.id, False, "error: relay is shutting down, reconnect and retry")
        else:
            self.send(notice_message("error: relay is shutting down, reconnect"))

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_inflight(self, timeout: float) -> None:
        pending = [task for task in self._tasks if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    def drop_subscription(self, sub_id: str) -> Subscription | None:
        subscription = self.subscriptions.pop(sub_id, None)
        if subscription is not None:
            self.context.index.remove(subscription)
            self.pending_live.pop(subscription, None)
            metrics.SUBSCRIPTIONS.dec()
        return subscription

    def add_subscription(self, subscription: Subscription) -> None:
        self.subscriptions[subscription.sub_id] = subscription
        self.pending_live[subscription] = []
        self.context.index.add(subscription)
        metrics.SUBSCRIPTIONS.inc()

    def forget_subscriptions(self) -> None:
        for subscription in self.subscriptions.values():
            self.context.index.remove(subscription)
        metrics.SUBSCRIPTIONS.dec(len(self.subscriptions))
        self.subscriptions.clear()
        self.pending_live.clear()
