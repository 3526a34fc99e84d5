"""The private /metrics listener: Prometheus text on `network.metrics_host:metrics_port`.

/metrics tells an attacker how loaded the relay is and what fails, so it is never served on the
public port without its bearer token. Scrapers inside the cluster network reach this listener
instead, without a token. gunicorn binds the public address once, in the master, and hands the
socket to every worker, so the app could not tell a second gunicorn-bound address from the
public one. Each worker therefore tries to bind the private port itself, without SO_REUSEPORT:
the first one to succeed serves it and the others retry every few seconds, so when the serving
worker dies a sibling (or its replacement) takes the port over. One worker is enough because the
metrics are aggregated over the instance's workers (prometheus multiprocess mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from cluster import metrics
from cluster.config import NetworkSettings
from cluster.relay.keys import SETTINGS_KEY

log = logging.getLogger(__name__)

RETRY_INTERVAL = 5.0
"""Seconds between a worker's attempts to take over the private port from a sibling."""
SHUTDOWN_TIMEOUT = 1.0
"""Seconds a scrape in flight gets when the worker stops (aiohttp's default is 60)."""


def private_metrics_address(network: NetworkSettings) -> tuple[str, int] | None:
    """(host, port) of the private listener, or None when `network.metrics_port` is 0."""
    if not network.metrics_port:
        return None
    return network.metrics_host, network.metrics_port


async def metrics_page(request: web.Request) -> web.Response:
    """The instance's metrics, aggregated over its workers."""
    body, content_type = metrics.render()
    return web.Response(body=body, headers={"Content-Type": content_type})


def private_app() -> web.Application:
    """Only /metrics: nothing else of the relay is reachable on the private port."""
    app = web.Application()
    app.router.add_get("/metrics", metrics_page)
    return app


async def _hold_port(handler: web.Server, host: str, port: int) -> asyncio.AbstractServer:
    """Bind host:port once it is free (a sibling worker may hold it) and return the server."""
    loop = asyncio.get_running_loop()
    reported = False
    while True:
        try:
            server = await loop.create_server(handler, host, port, reuse_address=True)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE and not reported:
                log.error("private metrics listener %s:%d: %s", host, port, exc)
                reported = True
            await asyncio.sleep(RETRY_INTERVAL)
            continue
        log.info("serving /metrics on the private listener %s:%d", host, port)
        return server


async def private_metrics_listener(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: try to serve the private port in this worker while the app runs."""
    address = private_metrics_address(app[SETTINGS_KEY].network)
    if address is None:
        yield
        return
    runner = web.AppRunner(
        private_app(), handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT
    )
    await runner.setup()
    assert runner.server is not None  # set by setup()
    holder = asyncio.create_task(_hold_port(runner.server, *address), name="private-metrics")
    try:
        yield
    finally:
        holder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            (await holder).close()  # stop accepting; cleanup() then closes open scrapes
        await runner.cleanup()
