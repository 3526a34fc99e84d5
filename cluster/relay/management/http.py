"""NIP-86 over HTTP: `POST /` with `Content-Type: application/nostr+json+rpc`, NIP-98 signed by
one of `admin.pubkeys`; and the worker-lifetime resources behind it.

The NIP-98 `u` tag must name this request: the Host the client used (nginx passes
`Host $http_host`, port included) with the scheme the client used (X-Forwarded-Proto, believed
only from a trusted proxy), or the configured relay URL (NIP-86: "the u tag is the relay URL";
ws(s) and http(s) spellings are equivalent, see cluster/nostr/nip98.py). The `payload` tag is
required, so a signed header authorises this one body only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping

from aiohttp import WSCloseCode, web

from cluster.bus.constants import moderation_channel
from cluster.bus.invalidation import Invalidations
from cluster.config import Settings
from cluster.nostr.nip98 import Refusal, verify_authorization
from cluster.relay.addresses import client_address
from cluster.relay.background import running
from cluster.relay.connection import ConnectionRegistry
from cluster.relay.keys import CONNECTIONS_KEY, CONTEXT_KEY
from cluster.relay.management.rpc import STORE_FAILURES, Management, encode_error
from cluster.relay.moderation import RELOAD_INTERVAL
from cluster.store.moderation import PostgresDecisions

log = logging.getLogger(__name__)

RPC_TYPE = "application/nostr+json+rpc"
MAX_BODY = 65_536
"""A NIP-86 call is a method name and a few short params."""
BLOCKED_IP_CLOSE = "blocked: this address is blocked by the relay operator"
RESPONSE_HEADERS = {"Access-Control-Allow-Origin": "*"}

MANAGEMENT_KEY = web.AppKey("management", Management)


def _error(status: int, message: str) -> web.Response:
    headers = dict(RESPONSE_HEADERS)
    if status == 401:
        headers["WWW-Authenticate"] = "Nostr"
    return web.Response(
        status=status, body=encode_error(message), content_type="application/json", headers=headers
    )


def request_urls(request: web.BaseRequest, settings: Settings) -> list[str]:
    """Every absolute URL this request may be signed for (see the module docstring)."""
    scheme = request.scheme
    proto = request.headers.get("X-Forwarded-Proto", "").strip().lower()
    forwarded = client_address(
        request.remote or "",
        request.headers.get("X-Forwarded-For"),
        settings.rate_limits.trusted_proxies,
    ).forwarded
    if forwarded and proto in ("http", "https"):
        scheme = proto
    urls = [f"{scheme}://{request.host}{request.path_qs}", settings.relay_url]
    return urls


async def management_rpc(request: web.Request) -> web.StreamResponse:
    """Authorise (NIP-98, admin key), then run one JSON-RPC call; 401 with a JSON-RPC error
    body when the request does not come from an operator."""
    settings = request.app[CONTEXT_KEY].settings
    if request.content_type != RPC_TYPE:
        return _error(415, f"NIP-86 calls need Content-Type: {RPC_TYPE}")
    admins = settings.admin.pubkeys
    if not admins:
        return _error(401, "relay management is disabled: no admin.pubkeys are configured")
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _error(413, f"request body over {MAX_BODY} bytes")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"request body over {MAX_BODY} bytes")
    if len(body) > MAX_BODY:
        return _error(413, f"request body over {MAX_BODY} bytes")
    signer = verify_authorization(
        request.headers.get("Authorization", ""),
        request.method,
        request_urls(request, settings),
        body,
        int(time.time()),
        require_payload=True,
    )
    if isinstance(signer, Refusal):
        return _error(401, signer.reason)
    if signer not in admins:
        return _error(401, "this pubkey may not manage this relay")
    status, answer = await request.app[MANAGEMENT_KEY].call(body)
    log.info("NIP-86 call by %s: HTTP %d", signer, status)
    return web.Response(status=status, body=answer, content_type=RPC_TYPE, headers=RESPONSE_HEADERS)


def close_blocked(registry: ConnectionRegistry, blocked: Mapping[str, str]) -> None:
    """blockip applies to open sockets too: close this worker's connections from `blocked`."""
    for connection in registry.snapshot():
        if connection.access.client_ip in blocked:
            connection.abort(WSCloseCode.POLICY_VIOLATION, BLOCKED_IP_CLOSE)


async def management_context(app: web.Application) -> AsyncIterator[None]:
    """Load the decisions, follow the invalidation channel, reload every RELOAD_INTERVAL."""
    context = app[CONTEXT_KEY]
    settings = context.settings
    moderation = context.moderation
    moderation.pool = context.store.pool
    registry = app[CONNECTIONS_KEY]
    moderation.on_blocked_ips.append(lambda blocked: close_blocked(registry, blocked))
    try:
        await moderation.reload()
    except STORE_FAILURES as exc:  # serve anyway; the listener's first subscribe reloads
        log.warning("could not load the NIP-86 decisions at start: %s", exc)
    invalidations = Invalidations(
        settings.redis, moderation_channel(settings.redis.key_prefix), moderation.reload
    )
    await invalidations.start()
    app[MANAGEMENT_KEY] = Management(
        PostgresDecisions(context.store.pool), moderation, invalidations.announce
    )

    async def reload_forever() -> None:
        while True:
            await asyncio.sleep(RELOAD_INTERVAL)
            invalidations.request_reload()

    try:
        async with running(reload_forever(), "moderation-reload"):
            yield
    finally:
        await invalidations.close()
