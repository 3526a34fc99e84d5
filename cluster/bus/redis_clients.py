"""The one place the relay creates Redis clients, so a Sentinel deployment applies everywhere.

Every client (fan-out publisher and reader, limits, the channel-state cache, the NIP-86
invalidation listener, the dashboard publisher) comes from `redis_from_settings`. With
`redis.sentinels` set, each client asks the sentinels for the current master of
`redis.sentinel_service` whenever it opens a connection (redis-py's `Sentinel.master_for`), so
after a failover the next reconnect reaches the promoted replica without a relay restart. The
callers keep their own timeouts and retry policies: those are about what an outage may cost each
of them, not about how the master is found.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel
from redis.connection import SSLConnection, parse_url

from cluster.config import RedisSettings


class SentinelRedis(aioredis.Redis):
    """A master client that also closes its connections to the sentinels on `aclose`
    (redis-py leaves them to the garbage collector, which warns about unclosed sockets)."""

    sentinel_manager: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel_manager is not None:
            for client in self.sentinel_manager.sentinels:
                await client.aclose()


def sentinel_addresses(settings: RedisSettings) -> list[tuple[str, int]]:
    """`["host:port", ...]` as (host, port) pairs; `[v6]:port` loses its brackets."""
    pairs = []
    for address in settings.sentinels:
        host, _, port = address.rpartition(":")
        pairs.append((host.strip("[]"), int(port)))
    return pairs


def _server_options(url: str) -> dict[str, Any]:
    """What `url` says besides where the server is: credentials, database, TLS."""
    if not url:
        return {}
    options: dict[str, Any] = dict(parse_url(url))  # type: ignore[no-untyped-call]
    options.pop("host", None)
    options.pop("port", None)
    options.pop("path", None)
    if options.pop("connection_class", None) is SSLConnection:
        options["ssl"] = True
    return options


def redis_from_settings(source: RedisSettings | str, **options: Any) -> aioredis.Redis:
    """A client for the configured Redis: by URL, or the sentinels' current master.

    `source` may be a bare URL (tests, tools) for a plain client. `options` are redis-py
    connection keywords (socket_timeout, retry, client_name, ...); they apply to the master
    connections, and the socket timeouts also to the sentinel queries, so finding the master
    costs no more than the caller allows for a command.
    """
    if isinstance(source, str):
        return aioredis.Redis.from_url(source, **options)
    if not source.sentinels:
        return aioredis.Redis.from_url(source.url, **options)
    sentinel_options: dict[str, Any] = {
        key: value for key, value in options.items() if key.startswith("socket_")
    }
    if source.sentinel_password:
        sentinel_options["password"] = source.sentinel_password
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        sentinel_addresses(source), sentinel_kwargs=sentinel_options
    )
    client = sentinel.master_for(
        source.sentinel_service,
        redis_class=SentinelRedis,
        **{**_server_options(source.url), **options},
    )
    assert isinstance(client, SentinelRedis)
    client.sentinel_manager = sentinel
    return client
