"""HTTP routes: the WebSocket endpoint and NIP-11 on `/`, and `/health`."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os

import orjson
from aiohttp import web

from cluster import metrics
from cluster.relay.access import AccessState
from cluster.relay.connection import Connection
from cluster.relay.context import RelayContext
from cluster.relay.deflate import ThresholdDeflateResponse
from cluster.relay.keys import CONNECTIONS_KEY, CONTEXT_KEY, SETTINGS_KEY
from cluster.relay.ratelimit import client_ip

NIP11_TYPE = "application/nostr+json"
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "*",
    "Access-Control-Allow-Methods": "GET, OPTIONS",
}
HEALTH_TIMEOUT = 2.0


async def root(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await websocket(request)
    if NIP11_TYPE in request.headers.get("Accept", ""):
        return web.Response(
            body=request.app[CONTEXT_KEY].nip11_document(),
            content_type=NIP11_TYPE,
            headers=CORS_HEADERS,
        )
    settings = request.app[SETTINGS_KEY]
    return web.Response(
        text=f"{settings.info.name}: a Nostr relay. Connect a Nostr client to "
        f"{settings.relay_url}\n",
        headers=CORS_HEADERS,
    )


async def preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=CORS_HEADERS)


async def websocket(request: web.Request) -> web.StreamResponse:
    context = request.app[CONTEXT_KEY]
    settings = context.settings
    ip = client_ip(
        request.remote or "",
        request.headers.get("X-Forwarded-For"),
        settings.rate_limits.trusted_proxies,
    )
    access = context.access.state_for(ip)
    lease = None
    if not access.exempt and context.connection_counter is not None:
        lease = await context.connection_counter.acquire(access.rate_subject)
        if lease is None:
            return web.Response(
                status=429, text="rate-limited: too many connections from your address\n"
            )
    try:
        return await _serve_websocket(request, context, access)
    finally:
        if lease is not None and context.connection_counter is not None:
            await context.connection_counter.release(lease)


async def _serve_websocket(
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
    connection = Connection(ws, context, access, request.transport)
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
        await connection.wait_inflight(settings.network.shutdown_timeout)
        await connection.flush(1.0)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await ws.close()
        connections.discard(connection)
        context.stats.disconnected(connection.close_reason)
    return ws


async def health(request: web.Request) -> web.Response:
    context = request.app[CONTEXT_KEY]
    try:
        await asyncio.wait_for(context.store.ping(), HEALTH_TIMEOUT)
        postgres = "ok"
    except Exception:  # any failure means "not serving writes"; the reason is in the logs
        postgres = "down"
    redis = "ok" if context.bus.connected else "down"
    body = {
        "status": "ok" if postgres == "ok" else "down",
        "postgres": postgres,
        "redis": redis,
        "pid": os.getpid(),
        "connections": context.stats.connections,
        "subscriptions": len(context.index),
    }
    return web.Response(
        body=orjson.dumps(body),
        status=200 if postgres == "ok" else 503,
        content_type="application/json",
    )


async def prometheus_metrics(request: web.Request) -> web.Response:
    token = request.app[SETTINGS_KEY].network.metrics_token
    if token:
        offered = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
        if not hmac.compare_digest(offered, token.encode()):
            return web.Response(status=401, text="metrics need Authorization: Bearer <token>\n")
    body, content_type = metrics.render()
    return web.Response(body=body, headers={"Content-Type": content_type})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", root)
    app.router.add_route("OPTIONS", "/", preflight)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", prometheus_metrics)
