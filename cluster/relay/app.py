"""The aiohttp application factory: one cleanup context per resource, in start-up order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import psycopg
from aiohttp import web

from cluster import metrics
from cluster.bus.fanout import FanoutBus
from cluster.bus.redis_clients import redis_from_settings
from cluster.config import Settings
from cluster.payments.channels import ChannelStateCache
from cluster.payments.dassie import DassieClient
from cluster.payments.gate import PaymentGate
from cluster.payments.outbox import OutboxForwarder
from cluster.payments.pricing import Pricing
from cluster.relay.access import AccessControl
from cluster.relay.admission import QueryAdmission
from cluster.relay.background import running
from cluster.relay.budgets import AddressBudgets
from cluster.relay.connection import ConnectionRegistry
from cluster.relay.context import RelayContext, message_limits
from cluster.relay.dashboard_snapshot import dashboard_publisher
from cluster.relay.http import add_routes
from cluster.relay.keys import CONNECTIONS_KEY, CONTEXT_KEY, SETTINGS_KEY
from cluster.relay.management.http import management_context
from cluster.relay.policies import default_policies
from cluster.relay.ratelimit import ConnectionCounter, RateLimiter, redis_client
from cluster.relay.subscriptions import SubscriptionIndex
from cluster.store import search
from cluster.store.archive import ArchiveRunner, archive_scope
from cluster.store.events import EventStore
from cluster.store.pool import create_pool, create_write_pool
from cluster.store.replicas import ReadRouter
from cluster.store.writer import EventWriter, PostgresBatchSaver

log = logging.getLogger(__name__)

PURGE_INTERVAL = 60.0


async def _relay_context(app: web.Application) -> AsyncIterator[None]:
    """Pools → store, writer → index → fan-out bus → payments; torn down in reverse.

    The writer has a pool of its own (one connection per lane) that queries cannot take, so a
    flood of slow reads cannot hold back an EVENT's commit (cluster/store/pool.py).
    """
    settings = app[SETTINGS_KEY]
    database = settings.database
    pool = create_pool(database, name="relay", warm=True)
    await pool.open(wait=False)
    write_pool = create_write_pool(database, size=database.writer_lanes, name="relay-writer")
    await write_pool.open(wait=False)
    reads = ReadRouter(pool, database)  # REQ/COUNT/NIP-77 on replicas when configured
    await reads.open()
    store = EventStore(pool, archive_scope(settings.archive.kind_horizons), reads)
    writer = EventWriter(
        PostgresBatchSaver(write_pool),
        settings.database.write_batch_max,
        lanes=settings.database.writer_lanes,
        linger=settings.database.write_linger_ms / 1000,
    )
    writer.start()
    index = SubscriptionIndex()
    bus = FanoutBus(
        settings.redis,
        settings.redis.key_prefix,
        settings.redis.stream_maxlen,
        index.dispatch,
        interested=lambda: len(index) > 0,
    )
    await bus.start()
    limits_redis = redis_client(settings.redis)
    rate_limits = settings.rate_limits
    limiter = RateLimiter(
        limits_redis,
        prefix=settings.redis.key_prefix,
        fallback_workers=rate_limits.fallback_workers,
    )
    counter = ConnectionCounter(
        limits_redis,
        prefix=settings.redis.key_prefix,
        limit=rate_limits.connections_per_ip,
        fallback_workers=rate_limits.fallback_workers,
    )
    context = RelayContext(
        settings=settings,
        store=store,
        writer=writer,
        bus=bus,
        index=index,
        limits=message_limits(settings),
        pricing=Pricing(settings.pricing, pool),
        access=AccessControl(settings, limiter),
        admission=QueryAdmission(settings.query_concurrency, settings.queries.queue_per_address),
        budgets=AddressBudgets(settings),
        connection_counter=counter,
        policies=default_policies(settings.limits),
    )
    async with contextlib.AsyncExitStack() as payments:
        if settings.dassie.url:
            await _start_payments(context, payments)
        app[CONTEXT_KEY] = context
        yield
    await writer.close()
    await bus.close()
    await limits_redis.aclose()
    await write_pool.close()
    await reads.close()
    await pool.close()


async def _start_payments(context: RelayContext, stack: contextlib.AsyncExitStack) -> None:
    """Dassie client, channel-state cache (L2 on its own Redis client), gate and outbox (on a
    one-connection pool of its own, so queries can never delay forwarding claims)."""
    dassie = context.settings.dassie
    node = DassieClient(
        dassie.url,
        dassie.token,
        timeout=dassie.timeout,
        failure_threshold=dassie.failure_threshold,
        reset_after=dassie.reset_after,
    )
    stack.push_async_callback(node.close)
    cache_redis = redis_from_settings(
        context.settings.redis, socket_timeout=0.5, socket_connect_timeout=0.5
    )
    stack.push_async_callback(cache_redis.aclose)
    channels = ChannelStateCache(
        node,
        cache_redis,
        prefix=context.settings.redis.key_prefix,
        ttl=dassie.channel_ttl,
        stale_grace=dassie.stale_grace,
    )
    context.payments = PaymentGate(
        context.pricing, channels, bind_claims=context.settings.pricing.bind_claims
    )
    outbox_pool = create_write_pool(context.settings.database, size=1, name="relay-outbox")
    await outbox_pool.open(wait=False)
    stack.push_async_callback(outbox_pool.close)
    outbox = OutboxForwarder(outbox_pool, node)
    outbox.start()
    stack.push_async_callback(outbox.close)
    context.outbox = outbox
    await context.pricing.refresh()


async def _expiration_purger(app: web.Application) -> AsyncIterator[None]:
    """NIP-40: expired events are never served (SQL excludes them) and are deleted here."""
    store = app[CONTEXT_KEY].store

    async def purge_forever() -> None:
        while True:
            await asyncio.sleep(PURGE_INTERVAL)
            try:
                await store.purge_expired(int(time.time()))
            except Exception as exc:  # keep purging on the next round whatever happened
                log.warning("expired-event purge failed: %s", exc)

    async with running(purge_forever(), "expiration-purger"):
        yield


async def _archive_runner(app: web.Application) -> AsyncIterator[None]:
    """The archive tier's schedule: every worker tries, one at a time moves (store/archive.py)."""
    archive = app[SETTINGS_KEY].archive
    if not archive.horizons or not archive.schedule:
        yield
        return
    runner = ArchiveRunner(
        app[SETTINGS_KEY].database.url, archive.kind_horizons, archive.batch_size, archive.interval
    )
    async with running(runner.run_forever(), "archive-runner"):
        yield
    await runner.close()


async def _search_index_cleaner(app: web.Application) -> AsyncIterator[None]:
    """search.enabled: make the stored search documents and their index follow search.config
    (cluster/store/search.py; one worker does it, writes going on meanwhile), then empty the
    index's pending list in the background every second, so no EVENT's commit has to. Off: a
    warning if writes still pay for documents (turning them off is the operator's command: a
    relay of the same database may have search on, docs/SEARCH-AND-COUNT.md)."""
    context = app[CONTEXT_KEY]
    store = context.store
    settings = context.settings
    if not settings.search.enabled:
        try:
            if await search.documents_trigger_config(settings.database.url) is not None:
                log.warning(
                    "search is off but stored events still get search documents (another"
                    " relay of this database has search on?); if none does, stop it with"
                    " `python -m cluster.store.search --off`"
                )
        except Exception as exc:  # only a warning was at stake
            log.warning("could not check for search documents: %s", exc)
        yield  # search filters are refused
        return

    async def clean_forever() -> None:
        try:  # the first worker to get here builds the documents; writes go on meanwhile
            await search.ensure_search_documents(settings.database.url, settings.search.config)
        except Exception as exc:
            log.error("could not build the search documents: %s (searches miss them)", exc)
        while True:
            await asyncio.sleep(search.CLEAN_INTERVAL)
            try:
                await search.clean_pending_list(store.pool)
            except psycopg.errors.InsufficientPrivilege:
                log.warning("not the search index's owner: autovacuum alone empties its list")
                return
            except Exception as exc:  # the next round tries again; inserts are not affected
                log.warning("search index clean-up failed: %s", exc)

    async with running(clean_forever(), "search-index-cleaner"):
        yield


async def _metrics_flusher(app: web.Application) -> AsyncIterator[None]:
    """Buffered metric updates reach the instance's /metrics within metrics.FLUSH_INTERVAL."""

    async def flush_forever() -> None:
        while True:
            await asyncio.sleep(metrics.FLUSH_INTERVAL)
            metrics.flush_values()

    async with running(flush_forever(), "metrics-flusher"):
        yield
    metrics.flush_values()


async def _drain_connections(app: web.Application) -> None:
    """SIGTERM: stop taking new work, answer every EVENT already received, close with 1001."""
    context = app[CONTEXT_KEY]
    context.shutting_down = True
    connections = app[CONNECTIONS_KEY].snapshot()
    timeout = context.settings.network.shutdown_timeout
    await asyncio.gather(*(conn.wait_inflight(timeout) for conn in connections))
    await asyncio.gather(*(conn.flush(1.0) for conn in connections))
    await asyncio.gather(
        *(conn.ws.close(code=1001, message=b"relay shutting down") for conn in connections),
        return_exceptions=True,
    )


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=settings.limits.max_message_bytes)
    app[SETTINGS_KEY] = settings
    app[CONNECTIONS_KEY] = ConnectionRegistry()
    app.cleanup_ctx.append(_relay_context)
    app.cleanup_ctx.append(management_context)  # NIP-86 decisions, kept current cluster-wide
    app.cleanup_ctx.append(_expiration_purger)
    app.cleanup_ctx.append(_archive_runner)
    app.cleanup_ctx.append(_metrics_flusher)
    app.cleanup_ctx.append(_search_index_cleaner)
    app.cleanup_ctx.append(dashboard_publisher)
    app.on_shutdown.append(_drain_connections)
    add_routes(app)
    return app
