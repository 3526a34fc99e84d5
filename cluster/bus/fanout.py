"""Cross-worker, cross-instance fan-out of accepted events over a Redis Stream.

Why a stream and not plain pub/sub: pub/sub forgets what it published while a subscriber is
disconnected; a stream lets every worker resume from the last entry it read. Publishing is
decoupled from the request path by a local queue that is retried until Redis takes it, so a Redis
outage delays live delivery but loses nothing: when Redis comes back (even empty, after a
restart) the queued events are appended and every worker reads them. A delivery memory
(`RecentIds`) makes repeats (a retried XADD, our own local delivery) harmless.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from cluster import metrics
from cluster.bus.constants import FIELD_EVENTS, FIELD_ORIGIN, FIELD_SENT_AT, events_stream
from cluster.bus.dedup import RecentIds
from cluster.bus.redis_clients import redis_from_settings
from cluster.config import RedisSettings
from cluster.nostr.event import Event, event_from_json

log = logging.getLogger(__name__)

_entry_decoder = msgspec.json.Decoder(list[msgspec.Raw])

Deliver = Callable[[Event, bytes], object]

READ_BLOCK_MS = 1000
READ_COUNT = 1000
PUBLISH_BATCH = 500
PUBLISH_LINGER = 0.0
READ_COALESCE = 0.004
ENTRY_EVENTS = 100
MAX_PENDING = 200_000
BACKOFF_MAX = 2.0


def _stream_id(value: bytes | str) -> tuple[int, int]:
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class FanoutBus:
    def __init__(
        self,
        redis_url: RedisSettings | str,
        prefix: str,
        maxlen: int,
        deliver: Deliver,
        *,
        interested: Callable[[], bool] = lambda: True,
        dedup_capacity: int = 50_000,
    ) -> None:
        self.origin = uuid.uuid4().hex[:12].encode()
        self._url = redis_url
        self._stream = events_stream(prefix)
        self._maxlen = maxlen
        self._deliver = deliver
        self._interested = interested
        self._seen = RecentIds(dedup_capacity)
        self._pending: deque[bytes] = deque()
        self._pending_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._publisher: aioredis.Redis | None = None
        self._reader: aioredis.Redis | None = None
        self.connected = False
        self.dropped = 0
        self.published = 0
        self.received = 0

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._publisher = redis_from_settings(
            self._url, socket_timeout=5, socket_connect_timeout=2, retry_on_timeout=False
        )
        self._reader = redis_from_settings(
            self._url,
            socket_timeout=READ_BLOCK_MS / 1000 + 5,
            socket_connect_timeout=2,
        )
        self._tasks = [
            asyncio.create_task(self._publish_loop(), name="fanout-publish"),
            asyncio.create_task(self._read_loop(), name="fanout-read"),
        ]

    async def close(self, flush_timeout: float = 3.0) -> None:
        """Give queued publications a bounded chance to reach Redis, then stop."""
        deadline = asyncio.get_running_loop().time() + flush_timeout
        while self._pending and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in (self._publisher, self._reader):
            if client is not None:
                await client.aclose()

    # ---- publishing -------------------------------------------------------------------------

    def publish(self, event: Event, event_json: bytes) -> None:
        """Deliver to this worker's subscribers now and queue the event for every other worker."""
        self._seen.add(event.id)
        self._deliver(event, event_json)
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
            self.dropped += 1
        self._pending.append(event_json)
        self._pending_ready.set()

    async def _publish_loop(self) -> None:
        """Append queued events to the stream, several events per entry (one XADD per
        ENTRY_EVENTS events), so the per-event Redis cost stays small under load."""
        assert self._publisher is not None
        backoff = 0.05
        while True:
            await self._pending_ready.wait()
            await asyncio.sleep(PUBLISH_LINGER)  # gather a burst into one pipeline
            self._pending_ready.clear()
            while self._pending:
                count = min(PUBLISH_BATCH, len(self._pending))
                batch = [self._pending[i] for i in range(count)]
                sent_at = str(time.time()).encode()
                entries: list[dict[FieldT, EncodableT]] = [
                    {
                        FIELD_ORIGIN: self.origin,
                        FIELD_SENT_AT: sent_at,
                        FIELD_EVENTS: b"[" + b",".join(batch[start : start + ENTRY_EVENTS]) + b"]",
                    }
                    for start in range(0, count, ENTRY_EVENTS)
                ]
                try:
                    await self._append(entries)
                except (RedisError, OSError) as exc:
                    log.warning("fan-out publish failed (%s); retrying in %.2fs", exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                backoff = 0.05
                for _ in range(count):
                    self._pending.popleft()
                self.published += count

    async def _append(self, entries: list[dict[FieldT, EncodableT]]) -> None:
        """XADD each entry; a lone entry (the usual case below a few thousand events/s) is sent
        as one command, since a pipeline's set-up and reset cost more than its one round trip."""
        assert self._publisher is not None
        if len(entries) == 1:
            await self._publisher.xadd(
                self._stream, entries[0], maxlen=self._maxlen, approximate=True
            )
            return
        async with self._publisher.pipeline(transaction=False) as pipe:
            for fields in entries:
                pipe.xadd(self._stream, fields, maxlen=self._maxlen, approximate=True)
            await pipe.execute()

    # ---- receiving --------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        assert self._reader is not None
        last_id: bytes | None = None
        run_id: str | None = None
        backoff = 0.05
        while True:
            try:
                if not self.connected:
                    last_id, run_id = await self._resume_position(last_id, run_id)
                    self.connected = True
                    backoff = 0.05
                assert last_id is not None
                response: Any = await self._reader.xread(
                    {self._stream: last_id}, count=READ_COUNT, block=READ_BLOCK_MS
                )
            except (RedisError, OSError) as exc:
                if self.connected:
                    log.warning("fan-out reader lost Redis (%s); will resume", exc)
                self.connected = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            for _stream, entries in response or ():
                for entry_id, fields in entries:
                    last_id = entry_id
                    self._receive(fields)
            if response:
                # Let entries accumulate for a moment: fewer, fuller reads under load, at the
                # cost of a few ms of live-delivery latency (budget: 100 ms).
                await asyncio.sleep(READ_COALESCE)

    async def _resume_position(
        self, last_id: bytes | None, run_id: str | None
    ) -> tuple[bytes, str]:
        """Where to continue reading after (re)connecting.

        First start: after the newest entry (history is served by REQ, not by the stream).
        Same Redis: exactly where we stopped. A restarted Redis (new run_id) whose stream no longer
        reaches back to our position: from its beginning, since everything in it is new to us.
        A replica promoted by Sentinel also has a new run_id but the replicated stream, which
        does reach back: we resume exactly where we stopped (entries the old master had not yet
        replicated are gone from the stream; they are stored, so a REQ still returns them).
        """
        assert self._reader is not None
        info: dict[str, Any] = await self._reader.info("server")
        new_run_id = str(info.get("run_id", ""))
        newest: Any = await self._reader.xrevrange(self._stream, count=1)
        if last_id is None:
            return (bytes(newest[0][0]) if newest else b"0-0"), new_run_id
        if new_run_id == run_id:
            return last_id, new_run_id
        oldest: Any = await self._reader.xrange(self._stream, count=1)
        if oldest and _stream_id(oldest[0][0]) <= _stream_id(last_id):
            return last_id, new_run_id
        log.warning("Redis restarted; reading its fan-out stream from the beginning")
        return b"0-0", new_run_id

    def _receive(self, fields: dict[bytes, bytes]) -> None:
        if fields.get(FIELD_ORIGIN) == self.origin or not self._interested():
            return  # nothing to match here: do not pay for decoding
        try:
            raws = _entry_decoder.decode(fields.get(FIELD_EVENTS, b"[]"))
            sent_at = float(fields.get(FIELD_SENT_AT, b"0"))
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
            log.error("ignoring undecodable fan-out entry")
            return
        if sent_at:
            metrics.DELIVERY_LAG.observe(max(0.0, time.time() - sent_at))
        for raw in raws:
            event_json = bytes(raw)
            try:
                event = event_from_json(event_json)
            except (msgspec.DecodeError, msgspec.ValidationError):
                log.error("ignoring undecodable event in a fan-out entry")
                continue
            if self._seen.add(event.id):
                self.received += 1
                self._deliver(event, event_json)
