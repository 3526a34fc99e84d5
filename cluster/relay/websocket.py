"""The socket entry: accept a WebSocket, give its Connection the dispatcher, run it to the end.

`dispatch` is the one place that knows the verbs: a `match` over the typed command union, so
mypy checks that every command has a case.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import assert_never

from aiohttp import web

from cluster.nostr.messages import (
    AuthCommand,
    CloseCommand,
    Command,
    CountCommand,
    EventCommand,
    NegCloseCommand,
    NegInvalidCommand,
    NegMsgCommand,
    NegOpenCommand,
    ReqCommand,
)
from cluster.relay import freshness
from cluster.relay.access import AccessState
from cluster.relay.addresses import client_address
from cluster.relay.connection import Connection
from cluster.relay.context import RelayContext
from cluster.relay.deflate import ThresholdDeflateResponse
from cluster.relay.keys import CONNECTIONS_KEY, CONTEXT_KEY
from cluster.relay.verbs.auth import handle_auth
from cluster.relay.verbs.close import handle_close
from cluster.relay.verbs.count import handle_count
from cluster.relay.verbs.event import handle_event
from cluster.relay.verbs.negentropy import (
    drop_negentropy_sessions,
    handle_neg_close,
    handle_neg_invalid,
    handle_neg_msg,
    handle_neg_open,
)
from cluster.relay.verbs.req import handle_req


async def dispatch(connection: Connection, command: Command) -> None:
    match command:
        case EventCommand():
            if connection.context.reads_on_replicas:
                freshness.event_sent(connection)  # read-your-writes
            await handle_event(connection, command)
        case ReqCommand():
            await handle_req(connection, command)
        case CountCommand():
            await handle_count(connection, command)
        case CloseCommand():
            await handle_close(connection, command)
        case AuthCommand():
            await handle_auth(connection, command)
        case NegOpenCommand():
            await handle_neg_open(connection, command)
        case NegMsgCommand():
            await handle_neg_msg(connection, command)
        case NegCloseCommand():
            await handle_neg_close(connection, command)
        case NegInvalidCommand():
            await handle_neg_invalid(connection, command)
        case _:
            assert_never(command)


async def websocket(request: web.Request) -> web.StreamResponse:
    """Per-address connection limit first (HTTP 429 before the upgrade), then the socket."""
    context = request.app[CONTEXT_KEY]
    settings = context.settings
    address = client_address(
        request.remote or "",
        request.headers.get("X-Forwarded-For"),
        settings.rate_limits.trusted_proxies,
    )
    if context.moderation.blocks_ip(address.ip):  # NIP-86 blockip
        return web.Response(status=403, text="blocked: your address is blocked on this relay\n")
    access = context.access.state_for(address.ip, forwarded=address.forwarded)
    lease = None
    if not access.exempt and context.connection_counter is not None:
        lease = await context.connection_counter.acquire(access.rate_subject)
        if lease is None:
            return web.Response(
                status=429, text="rate-limited: too many connections from your address\n"
            )
    try:
        return await _serve(request, context, access)
    finally:
        if lease is not None and context.connection_counter is not None:
            await context.connection_counter.release(lease)


async def _serve(
    request: web.Request, context: RelayContext, access: AccessState
) -> web.WebSocketResponse:
    settings = context.settings
    ws = ThresholdDeflateResponse(
        threshold=settings.network.compression_threshold,
        heartbeat=settings.network.ping_interval,
        # aiohttp closes the socket (1009) above max_msg_size; the relay's own, lower limit
        # answers with a NOTICE instead, so aiohttp's bound only stops absurd messages.
        max_msg_size=max(4 * settings.limits.max_message_bytes, 1 << 20),
        compress=settings.network.compression,
    )
    await ws.prepare(request)
    connection = Connection(ws, context, access, dispatch, request.transport, request.host)
    if settings.auth.required_for_writes:
        connection.offer_auth()  # NIP-42: every write needs it, so offer it up front
    connections = request.app[CONNECTIONS_KEY]
    connections.add(connection)
    context.stats.connected()
    writer = asyncio.create_task(connection.write_loop(), name="ws-writer")
    try:
        await connection.read_loop()
    finally:
        connection.forget_subscriptions()
        drop_negentropy_sessions(connection)
        await connection.wait_inflight(settings.network.shutdown_timeout)
        await connection.flush(1.0)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await ws.close()
        connections.discard(connection)
        context.stats.disconnected(connection.close_reason)
    return ws
