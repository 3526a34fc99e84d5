"""Cluster-wide "something changed, re-read it" signals over Redis pub/sub.

Workers cache state whose truth is in PostgreSQL (the NIP-86 decisions). A change is written
there first, then announced here; every worker of every instance re-reads on the announcement.
Pub/sub (not the fan-out stream) suffices because a message carries no data, only "reload":
one missed while a worker was disconnected is made good by reloading on every (re)subscribe,
and the owner of the cache reloads periodically as a last safety net. Many announcements in a
burst coalesce into one reload running and at most one more queued.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cluster.bus.redis_clients import redis_from_settings
from cluster.config import RedisSettings

log = logging.getLogger(__name__)

Reload = Callable[[], Awaitable[None]]

POLL_TIMEOUT = 1.0
BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0
RELOAD_MESSAGE = b"reload"


class Invalidations:
    """Subscribes to one channel and calls `reload` on each message and each (re)subscribe."""

    def __init__(self, redis_url: RedisSettings | str, channel: str, reload: Reload) -> None:
        self._url = redis_url
        self._channel = channel
        self._reload = reload
        self._client: aioredis.Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._wanted = asyncio.Event()
        self._reloader: asyncio.Task[None] | None = None
        self.subscribed = False
        self.reloads = 0

    async def start(self) -> None:
        self._client = redis_from_settings(
            self._url,
            socket_timeout=POLL_TIMEOUT + 5,
            socket_connect_timeout=2,
            client_name=f"{self._channel}-listener",  # findable in CLIENT LIST
        )
        self._task = asyncio.create_task(self._listen(), name="invalidation-listen")
        self._reloader = asyncio.create_task(self._reload_loop(), name="invalidation-reload")

    async def close(self) -> None:
        for task in (self._task, self._reloader):
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(task for task in (self._task, self._reloader) if task is not None),
            return_exceptions=True,
        )
        if self._client is not None:
            await self._client.aclose()

    async def announce(self) -> bool:
        """Tell every subscriber to reload; False when Redis is away (the periodic reload of
        each worker then picks the change up, later)."""
        if self._client is None:
            return False
        try:
            await self._client.publish(self._channel, RELOAD_MESSAGE)
        except (RedisError, OSError) as exc:
            log.warning("could not announce a change on %s: %s", self._channel, exc)
            return False
        return True

    def request_reload(self) -> None:
        """Ask for a reload soon (coalesced with any already asked for)."""
        self._wanted.set()

    async def _reload_loop(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()  # announcements from now on ask for one more reload
            try:
                await self._reload()
                self.reloads += 1
            except Exception as exc:  # keep the listener alive, and try again shortly
                log.warning("reload after %s failed: %s", self._channel, exc)
                await asyncio.sleep(BACKOFF_MAX)
                self._wanted.set()

    async def _listen(self) -> None:
        assert self._client is not None
        backoff = BACKOFF_MIN
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                while True:
                    message = await pubsub.get_message(timeout=POLL_TIMEOUT)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        # (re)subscribed: whatever was announced meanwhile was missed
                        self.subscribed = True
                        backoff = BACKOFF_MIN
                    self.request_reload()
            except (RedisError, OSError) as exc:
                if self.subscribed:
                    log.warning("lost the %s subscription (%s); resubscribing", self._channel, exc)
                self.subscribed = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
