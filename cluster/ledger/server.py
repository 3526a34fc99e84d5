"""The ledger node's aiohttp app: Dassie RPC (`dassie-rpc-01`) at /rpc, GET /health.

The procedures and their answers are in cluster/ledger/procedures.py; the start-up
configuration in cluster/ledger/config.py (re-exported here for `relay-cluster ledger`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import psycopg
import psycopg_pool
from aiohttp import WSMsgType, web

from cluster.ledger.config import (
    DEFAULT_PORT,
    DEFAULT_RECIPIENT,
    LedgerConfigError,
    check_token,
    ledger_config_from_env,
)
from cluster.ledger.procedures import Ledger, Request, dispatch
from cluster.ledger.store import LedgerStore, apply_ledger_migrations
from cluster.payments.envelope import EnvelopeError, decode_envelope, encode_response

__all__ = [
    "DEFAULT_PORT",
    "LedgerConfigError",
    "create_ledger_app",
    "ledger_config_from_env",
    "run_ledger",
]

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1024 * 1024

# -- HTTP and WebSocket ------------------------------------------------------------------------

LEDGER_KEY = web.AppKey("ledger", Ledger)
TOKEN_KEY = web.AppKey("ledger_token", str)
DATABASE_URL_KEY = web.AppKey("ledger_database_url", str)
RECIPIENT_KEY = web.AppKey("ledger_recipient", str)
SOCKETS_KEY = web.AppKey("ledger_sockets", set[web.WebSocketResponse])


def authorized(request: web.Request, token: str) -> bool:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), token.encode()
    )


async def rpc_socket(request: web.Request) -> web.StreamResponse:
    if not authorized(request, request.app[TOKEN_KEY]):
        raise web.HTTPUnauthorized(
            text="missing or invalid bearer token",
            headers={"WWW-Authenticate": 'Bearer realm="dassie-rpc"'},
        )
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, heartbeat=30.0)
    await ws.prepare(request)
    request.app[SOCKETS_KEY].add(ws)
    ledger = request.app[LEDGER_KEY]
    send_lock = asyncio.Lock()
    tasks: set[asyncio.Task[None]] = set()

    async def answer(request_id: str, result: dict[str, Any]) -> None:
        message = encode_response(request_id, result)
        async with send_lock:
            if ws.closed:
                return
            try:
                await ws.send_str(message)
            except ConnectionError:  # the client went away; it will retry what it needs
                log.debug("could not answer request %s: connection gone", request_id)

    async def serve(rpc: Request) -> None:
        try:
            await answer(rpc.id, await dispatch(ledger, rpc))
        except Exception:  # a bug in one request must not end the connection
            log.exception("request %s failed", rpc.id)
            await answer(rpc.id, {"type": "error", "message": "internal_error"})

    try:
        async for message in ws:
            if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            rpc = await _parse_request(message.data, answer)
            if rpc is None or rpc.type == "cancel":
                continue  # no subscriptions here, so there is nothing to cancel
            task = asyncio.create_task(serve(rpc))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        request.app[SOCKETS_KEY].discard(ws)
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return ws


async def _parse_request(
    raw: str | bytes, answer: Callable[[str, dict[str, Any]], Awaitable[None]]
) -> Request | None:
    """The request in a message, or None after answering (when it has an id) what is wrong."""
    try:
        message = decode_envelope(raw)
    except EnvelopeError as exc:
        log.warning("dropping undecodable message: %s", exc)
        return None
    try:
        return msgspec.convert(message, Request)
    except msgspec.ValidationError as exc:
        request_id = message.get("id") if isinstance(message, dict) else None
        if isinstance(request_id, str):
            await answer(request_id, {"type": "error", "message": f"invalid_request: {exc}"})
        else:
            log.warning("dropping request without an id: %s", exc)
        return None


async def health(request: web.Request) -> web.Response:
    try:
        await asyncio.wait_for(request.app[LEDGER_KEY].store.ping(), timeout=2.0)
    except (TimeoutError, psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        return web.json_response({"status": "unavailable", "error": repr(exc)}, status=503)
    return web.json_response({"status": "ok"})


async def _ledger_context(app: web.Application) -> AsyncIterator[None]:
    """Migrate → pool → store; the pool closes on shutdown."""
    url = app[DATABASE_URL_KEY]
    applied = await apply_ledger_migrations(url)
    if applied:
        log.info("applied ledger migrations %s", applied)
    pool = psycopg_pool.AsyncConnectionPool(
        url,
        min_size=1,
        max_size=8,
        timeout=5.0,
        open=False,
        name="ledger",
        kwargs={
            "autocommit": True,
            "options": "-c statement_timeout=5000",
            "application_name": "relay-cluster-ledger",
        },
    )
    await pool.open(wait=True, timeout=30.0)
    app[LEDGER_KEY] = Ledger(LedgerStore(pool), recipient=app[RECIPIENT_KEY])
    yield
    await pool.close()


async def _close_sockets(app: web.Application) -> None:
    sockets: set[web.WebSocketResponse] = app[SOCKETS_KEY]
    await asyncio.gather(
        *(ws.close(code=1001, message=b"ledger shutting down") for ws in list(sockets)),
        return_exceptions=True,
    )


def create_ledger_app(
    database_url: str, token: str, *, recipient: str = DEFAULT_RECIPIENT
) -> web.Application:
    """The ledger app; raises LedgerConfigError for a token shorter than 32 characters."""
    app = web.Application()
    app[TOKEN_KEY] = check_token(token)
    app[DATABASE_URL_KEY] = database_url
    app[RECIPIENT_KEY] = recipient
    app[SOCKETS_KEY] = set()
    app.cleanup_ctx.append(_ledger_context)
    app.on_shutdown.append(_close_sockets)
    app.router.add_get("/rpc", rpc_socket)
    app.router.add_get("/health", health)
    return app


def run_ledger(host: str, port: int, database_url: str, token: str) -> None:
    """Serve the ledger until SIGINT/SIGTERM (blocking). `relay-cluster ledger` calls this."""
    app = create_ledger_app(database_url, token)
    log.info("starting the ledger on http://%s:%d (RPC at /rpc)", host, port)
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(app, host=host, port=port, print=None, access_log=None)
