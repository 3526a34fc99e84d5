"""HTTP routes: `/` (the WebSocket upgrade, NIP-11, or a short text page), `/health`, `/metrics`
(with its bearer token only; cluster/relay/private_metrics.py serves it without one)."""

from __future__ import annotations

import asyncio
import hmac
import os
from typing import Any

import orjson
from aiohttp import web

from cluster import metrics
from cluster.relay.dashboard import add_dashboard_routes
from cluster.relay.keys import CONTEXT_KEY, SETTINGS_KEY
from cluster.relay.management.http import management_rpc
from cluster.relay.private_metrics import metrics_page, private_metrics_address
from cluster.relay.websocket import websocket
from cluster.store.dashboard import OUTBOX

NIP11_TYPE = "application/nostr+json"
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    # `*` does not cover Authorization (Fetch spec): browser NIP-86 tools send NIP-98 in it.
    "Access-Control-Allow-Headers": "Authorization, *",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
}
HEALTH_TIMEOUT = 2.0
OUTBOX_TIMEOUT = 1.0


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


async def _read_outbox(request: web.Request) -> None:
    """The claim outbox's backlog into its gauges (payments on only); a failure leaves them."""
    context = request.app[CONTEXT_KEY]
    if context.outbox is None:
        return
    try:
        async with asyncio.timeout(OUTBOX_TIMEOUT), context.store.pool.connection() as conn:
            row: Any = await (await conn.execute(OUTBOX)).fetchone()
    except Exception:  # the backlog is a figure, not part of the health verdict
        return
    metrics.OUTBOX_BACKLOG.set(row[0])
    metrics.OUTBOX_OLDEST.set(row[1] or 0.0)


async def health(request: web.Request) -> web.Response:
    context = request.app[CONTEXT_KEY]
    try:
        await asyncio.wait_for(context.store.ping(), HEALTH_TIMEOUT)
        postgres = "ok"
    except Exception:  # any failure means "not serving writes"; the reason is in the logs
        postgres = "down"
    redis = "ok" if context.bus.connected else "down"
    metrics.DEPENDENCY_UP.labels("postgres").set(1 if postgres == "ok" else 0)
    metrics.DEPENDENCY_UP.labels("redis").set(1 if redis == "ok" else 0)
    if postgres == "ok":
        await _read_outbox(request)
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
    """/metrics on the public port: only with its bearer token (see add_routes)."""
    token = request.app[SETTINGS_KEY].network.metrics_token
    scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(offered.encode(), token.encode()):
        return web.Response(status=401, text="metrics need Authorization: Bearer <token>\n")
    return await metrics_page(request)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", root)
    app.router.add_post("/", management_rpc)  # NIP-86 (application/nostr+json+rpc)
    app.router.add_route("OPTIONS", "/", preflight)
    app.router.add_get("/health", health)
    add_dashboard_routes(app)
    network = app[SETTINGS_KEY].network
    # /metrics is never public: with a private listener the public port does not serve it at
    # all, and without one it needs the token; with neither it is refused (404).
    if network.metrics_token and private_metrics_address(network) is None:
        app.router.add_get("/metrics", prometheus_metrics)
