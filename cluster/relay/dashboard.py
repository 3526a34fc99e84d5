"""The operator dashboard: `/dashboard` (a static page drawing its own plots) and
`/dashboard/data` (the figures, for admins only).

The page carries no figures and needs no credentials; every data request does: either
`Authorization: Bearer <admin.token>` or a NIP-98 event (`Authorization: Nostr <base64>`,
signed by the operator's NIP-07 extension) from one of `admin.pubkeys`. Figures come from every
worker's snapshot in Redis (cluster/relay/dashboard_snapshot.py), so the page keeps working
when an instance is down, plus PostgreSQL for payments (cluster/store/dashboard.py).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from importlib import resources
from typing import Any

import msgspec
import orjson
from aiohttp import web
from yarl import URL

from cluster.config import Settings
from cluster.nostr.nip98 import Refusal, verify_authorization
from cluster.relay.dashboard_data import merge
from cluster.relay.dashboard_snapshot import DASHBOARD_KEY, Snapshot
from cluster.relay.keys import CONTEXT_KEY, SETTINGS_KEY
from cluster.store.dashboard import PaymentFigures, payment_figures

log = logging.getLogger(__name__)

READ_TIMEOUT = 1.5
PAYMENTS_CACHE_SECONDS = 3.0
STATIC = {
    "dashboard.js": "application/javascript",
    "dashboard.css": "text/css",
}
# Everything the page uses comes from this relay: no CDN, no inline script, no framing.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}


def _static(name: str) -> bytes:
    return (resources.files("cluster.relay") / "static" / name).read_bytes()


def _request_urls(request: web.Request, settings: Settings) -> list[str]:
    """Every spelling of this request's URL a NIP-98 `u` tag may use: as the client reached us
    (the Host header; behind TLS termination the forwarded scheme) and the public URL."""
    urls = [str(request.url)]
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    if forwarded in ("http", "https"):
        urls.append(str(request.url.with_scheme(forwarded)))
    if settings.network.public_url:
        urls.append(str(URL(settings.network.public_url).with_path(request.path)))
    return urls


def authorise(request: web.Request, now: int) -> str | None:
    """None when the request carries admin credentials, otherwise why not (for the 401)."""
    admin = request.app[SETTINGS_KEY].admin
    if not admin.token and not admin.pubkeys:
        return "the dashboard needs admin.token or admin.pubkeys in the configuration"
    header = request.headers.get("Authorization", "")
    scheme, _, offered = header.partition(" ")
    if scheme.lower() == "bearer":
        if admin.token and hmac.compare_digest(offered.strip().encode(), admin.token.encode()):
            return None
        return "wrong token"
    if scheme.lower() == "nostr":
        if not admin.pubkeys:
            return "NIP-98 login is not configured (admin.pubkeys is empty)"
        signer = verify_authorization(
            header, request.method, _request_urls(request, request.app[SETTINGS_KEY]), None, now
        )
        if isinstance(signer, Refusal):
            return signer.reason
        return None if signer in admin.pubkeys else "this pubkey is not an operator"
    return "missing credentials: Authorization: Bearer <admin token> or Nostr <NIP-98 event>"


async def page(request: web.Request) -> web.Response:
    return web.Response(
        body=_static("dashboard.html"), content_type="text/html", headers=PAGE_HEADERS
    )


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC:
        raise web.HTTPNotFound()
    return web.Response(body=_static(name), content_type=STATIC[name], headers=PAGE_HEADERS)


class _PaymentsCache:
    """One worker's payment figures, re-read at most every PAYMENTS_CACHE_SECONDS."""

    def __init__(self) -> None:
        self.at = 0.0
        self.figures: PaymentFigures | None = None
        self.error: str | None = None
        self.lock = asyncio.Lock()


_PAYMENTS = web.AppKey("dashboard-payments", _PaymentsCache)


async def _payments(app: web.Application) -> tuple[PaymentFigures | None, str | None]:
    cache = app[_PAYMENTS]
    async with cache.lock:
        if time.monotonic() - cache.at >= PAYMENTS_CACHE_SECONDS:
            try:
                cache.figures = await payment_figures(app[CONTEXT_KEY].store.pool)
                cache.error = None
            except Exception as exc:  # PostgreSQL away or slow: show it, keep the rest
                cache.error = f"{type(exc).__name__}: {exc}"[:200]
            cache.at = time.monotonic()
    return cache.figures, cache.error


async def _snapshots(
    request: web.Request,
) -> tuple[dict[str, float], dict[str, Snapshot], str | None]:
    """Every worker's snapshot from Redis; with Redis away, this worker's own only."""
    feed = request.app[DASHBOARD_KEY]
    try:
        seen, snapshots = await asyncio.wait_for(feed.read_all(), READ_TIMEOUT)
        error = None
    except Exception as exc:  # the other workers are unknown, this one is still worth showing
        seen, snapshots, error = {}, {}, f"snapshots unavailable: {type(exc).__name__}"
    if feed.latest is not None:
        snapshots[feed.taker.worker] = feed.latest
        seen.setdefault(feed.taker.worker, feed.latest.at)
    return seen, snapshots, error


async def data(request: web.Request) -> web.Response:
    now = time.time()
    refusal = authorise(request, int(now))
    if refusal is not None:
        return web.Response(
            status=401,
            body=orjson.dumps({"error": refusal}),
            content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="dashboard"', "Cache-Control": "no-store"},
        )
    (seen, snapshots, redis_error), (figures, payments_error) = await asyncio.gather(
        _snapshots(request), _payments(request.app)
    )
    view: dict[str, Any] = merge(seen, snapshots, now)
    if redis_error:
        view["health"]["redis"] = "down"
    if payments_error:
        view["health"]["postgres"] = "down"
    view["errors"] = [e for e in (redis_error, payments_error) if e]
    view["served_by"] = request.app[DASHBOARD_KEY].taker.worker
    view["payments"] = msgspec.to_builtins(figures) if figures is not None else None
    view["payments_enabled"] = bool(request.app[SETTINGS_KEY].dassie.url)
    return web.Response(
        body=orjson.dumps(view),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def add_dashboard_routes(app: web.Application) -> None:
    app[_PAYMENTS] = _PaymentsCache()
    app.router.add_get("/dashboard", page)
    app.router.add_get("/dashboard/data", data)
    app.router.add_get("/dashboard/{name}", asset)
