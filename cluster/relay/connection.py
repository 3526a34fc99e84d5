"""One Connection per WebSocket: the socket, one read loop, the outbound queue and the one
writer task that owns every send.

The connection knows nothing of the verbs: it decodes each message and hands the typed command
to the dispatcher it was given (cluster/relay/websocket.py), so the path only ever points down.
Outbound data waits in one ordered queue, and everything queued for the connection (stored
results, live events held during a REQ, live events) counts against ONE byte budget. A REQ reads
its next chunk of stored rows only when the queue is below the budget (`wait_for_room`); live
events pushed by others cannot wait, so past the budget a client whose socket is backed up is
closed with 1008 instead of growing memory. A client that does not drain its socket within
`network.drain_timeout` (data queued, nothing written out) is closed with 1008 too, whatever
it sends.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
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
from cluster.relay.idle import IdleWatchdog
from cluster.relay.ordering import Line
from cluster.relay.outbound import Outbound, Stalled
from cluster.relay.subscriptions import Subscription

log = logging.getLogger(__name__)

REFUSALS = (NoticeRefusal, OkRefusal, ClosedRefusal)
DATA_TYPES = (WSMsgType.TEXT, WSMsgType.BINARY)
_serials = itertools.count()
SLOW_CLIENT_REASON = "Cannot keep up with event stream"
STALLED_REASON = "Not reading: nothing written out within the drain timeout"
HARD_CAP_FACTOR = 16


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
        host: str = "",
    ) -> None:
        self.ws = ws
        self.host = host  # the Host header: one of the URLs this relay answers to (NIP-62)
        self._dispatch = dispatch
        self.serial = next(_serials)  # picks the connection's group-commit lane
        self.transport = transport
        self.context = context
        self.access = access
        self.subscriptions: dict[str, Subscription] = {}
        # Live events that arrive while a subscription's stored events are still being sent.
        self.pending_live: dict[Subscription, list[tuple[str, bytes]]] = {}
        self.budget = context.settings.limits.max_outbound_bytes
        self.drain_timeout = context.settings.network.drain_timeout
        self.outbound = Outbound(
            ws, transport, budget=self.budget, drain_timeout=self.drain_timeout
        )
        self._held_bytes = 0  # in pending_live
        # Debug figures, logged when the connection is closed from inside (tests read them).
        self.peak_bytes = 0
        self.rows_fetched = 0
        self._closing = False
        self._condemned = False  # to be closed: nothing more it sends is acted on
        # EVENTs in flight at once on this connection, and the line that keeps their order.
        self.inflight = asyncio.Semaphore(context.settings.limits.max_inflight_events)
        self.line = Line()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.close_reason = "client closed"

    # ---- sending ----------------------------------------------------------------------------

    @property
    def queued_bytes(self) -> int:
        """Everything this connection holds for its client: the outbox and held live events."""
        return self.outbound.queued_bytes + self._held_bytes

    @property
    def closing(self) -> bool:
        return self._closing

    def condemn(self) -> None:
        """The connection will be closed once its last answers are out: what it sends
        meanwhile is read and dropped. Without this, a client sending as fast as it is answered
        had every message of the flush's moment answered, instead of none."""
        self._condemned = True

    def send(self, data: bytes) -> None:
        """Queue an answer to this client's own request (ordered with everything else)."""
        self._enqueue(data, live=False)

    async def wait_for_room(self) -> int:
        """Wait until the outbox is below the budget; the bytes left in it (0: closing).

        Only the outbox is waited on: live events held for a REQ leave only after it, so
        waiting on them would never end. They still shrink the room a REQ may fill.
        """
        await self.outbound.wait_for_room()
        if self._closing:
            return 0
        return max(self.budget - self.queued_bytes, 0)

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
            if self._closing:
                return
            if self._cannot_keep_up(len(message)):
                self.abort(WSCloseCode.POLICY_VIOLATION, SLOW_CLIENT_REASON)
                return
            pending.append((event.id, message))
            self._held_bytes += len(message)
            self._note_peak()
            return
        self.context.stats.delivered()
        self._enqueue(message, live=True)

    def take_held(self, subscription: Subscription) -> list[tuple[str, bytes]]:
        """The live events held for `subscription` during its REQ; delivery is live from now."""
        held = self.pending_live.pop(subscription, None) or []
        self._held_bytes -= sum(len(message) for _, message in held)
        return held

    def _enqueue(self, data: bytes, *, live: bool) -> None:
        if self._closing:
            return
        if live and self._cannot_keep_up(len(data)):
            self.abort(WSCloseCode.POLICY_VIOLATION, SLOW_CLIENT_REASON)
            return
        self.outbound.append(data)
        self._note_peak()

    def _note_peak(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self.queued_bytes)

    def _cannot_keep_up(self, incoming: int) -> bool:
        """Past the budget, but only the client's fault if the socket itself is backed up.

        A burst our own event loop has not written out yet is not the client being slow;
        a full kernel/transport buffer is. A hard cap still bounds memory either way.
        """
        queued = self.queued_bytes + incoming
        if queued <= self.budget:
            return False
        if queued > HARD_CAP_FACTOR * self.budget:
            return True
        return self.outbound.backed_up()

    async def write_loop(self) -> None:
        """Run the outbound writer (cluster/relay/outbound.py) until the socket goes away; a
        client that takes nothing within the drain timeout is closed with 1008."""
        try:
            await self.outbound.write_loop()
        except (Stalled, TimeoutError):
            self.abort(WSCloseCode.POLICY_VIOLATION, STALLED_REASON)
        except (ConnectionError, RuntimeError):
            self._closing = True
            self.outbound.clear()

    async def flush(self, timeout: float) -> None:
        """Wait (bounded) until everything queued has been written."""
        await self.outbound.flush(timeout)

    def abort(self, code: int, reason: str) -> None:
        """Close from inside (slow client, shutdown): stop queuing and close the socket."""
        if self._closing:
            return
        self._closing = True
        self.close_reason = reason
        log.info(
            "closing connection %d (%d): %s; peak_queued_bytes=%d rows_fetched=%d",
            self.serial,
            code,
            reason,
            self.peak_bytes,
            self.rows_fetched,
        )
        self.outbound.clear()
        self.spawn(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        """The close frame waits behind what the transport holds; a client that does not read
        even that within the drain timeout loses the connection (and its buffers) at once."""
        try:
            async with asyncio.timeout(self.drain_timeout):
                await self.ws.close(code=code, message=reason.encode())
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()

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
        watchdog = IdleWatchdog(self.context.settings.network.idle_timeout, self._idle)
        try:
            await self._read_messages(watchdog)
        finally:
            watchdog.cancel()

    def _idle(self) -> bool:
        """Nothing received for the idle timeout: close, unless subscriptions are open."""
        if self.subscriptions:
            return False
        self.abort(WSCloseCode.GOING_AWAY, "idle timeout")
        return True

    async def _read_messages(self, watchdog: IdleWatchdog) -> None:
        ws = self.ws
        while not self._closing:
            msg = await ws.receive()
            watchdog.touch()
            if msg.type in DATA_TYPES:
                await self._within_budget(len(msg.data))
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                break
            if msg.type == WSMsgType.ERROR:
                self.close_reason = f"protocol error: {ws.exception()}"
                break
            if msg.type not in DATA_TYPES or self._condemned:
                continue
            command = decode_client_message(msg.data, self.context.limits)
            if isinstance(command, REFUSALS):
                self.refuse(command)
            elif self.context.shutting_down:
                self._refuse_during_shutdown(command)
            else:
                await self._dispatch(self, command)

    async def _within_budget(self, size: int) -> None:
        """Wait while the client's address is over its message budget: nothing more is read
        from this socket meanwhile, so the client is held back by TCP, at no cost to others."""
        budgets = self.context.budgets
        while (wait := budgets.message_wait(self.access, size)) > 0 and not self._closing:
            await asyncio.sleep(wait)

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
            self.context.budgets.unsubscribed(self.access, subscription.filters)
            self.take_held(subscription)
            metrics.SUBSCRIPTIONS.dec()
        return subscription

    def add_subscription(self, subscription: Subscription) -> None:
        self.subscriptions[subscription.sub_id] = subscription
        self.pending_live[subscription] = []
        self.context.index.add(subscription)
        self.context.budgets.subscribed(self.access, subscription.filters)
        metrics.SUBSCRIPTIONS.inc()

    def forget_subscriptions(self) -> None:
        for subscription in self.subscriptions.values():
            self.context.index.remove(subscription)
            self.context.budgets.unsubscribed(self.access, subscription.filters)
        metrics.SUBSCRIPTIONS.dec(len(self.subscriptions))
        self.subscriptions.clear()
        self.pending_live.clear()
        self._held_bytes = 0
