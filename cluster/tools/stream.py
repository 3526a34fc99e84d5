"""`relay-cluster stream`: follow an upstream relay live and store what it sends (mirroring).

The tool subscribes to the upstream with the filter and republishes every event it receives,
checked first (id and BIP-340 signature), to the *local relay* with EVENT, like `sync` does
(cluster/tools/sync.py): the local write path keeps its rules (replacement, NIP-09, NIP-62,
policies, prices) and local subscribers get the events live through the fan-out.

It runs until stopped. When either side drops, it reconnects with exponential backoff (capped
at `backoff_max`) and asks the upstream again from a little before the newest event it has
stored (RESUME_OVERLAP), so events published while it was away are caught up; what it already
had is answered `duplicate` by the local relay and costs nothing. A gap longer than the
upstream's limit per REQ is what `relay-cluster sync` is for.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
import orjson

from cluster.nostr.event import event_from_object, verify
from cluster.tools.sync import Progress, ok_outcome

SUB_ID = "stream"
RESUME_OVERLAP = 60
"""Seconds before the newest stored event that a reconnect asks for again (clock skew, order)."""
CATCH_UP_LIMIT = 5000
"""The limit of the REQ that catches up after a reconnect (relays lower it to their maximum)."""
IN_FLIGHT = 256
"""Events sent to the local relay before waiting for their OKs."""


@dataclass
class StreamReport:
    received: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)  # OK outcome -> events
    invalid: int = 0
    connects: int = 0
    newest: int | None = None  # created_at of the newest event stored locally


def resume_filter(flt: dict[str, Any], newest: int | None) -> dict[str, Any]:
    """The first subscription follows from now (`limit: 0`); later ones catch up from
    RESUME_OVERLAP seconds before the newest stored event."""
    if newest is None:
        return flt if "limit" in flt or "since" in flt else {**flt, "limit": 0}
    return {**flt, "since": max(newest - RESUME_OVERLAP, 0), "limit": CATCH_UP_LIMIT}


class _Mirror:
    """One connected pair (upstream, local): relay upstream EVENTs, tally the local OKs."""

    def __init__(self, report: StreamReport, local: aiohttp.ClientWebSocketResponse) -> None:
        self.report = report
        self.local = local
        self.pending: dict[str, int] = {}  # id -> created_at, sent and not answered yet
        self.room = asyncio.Semaphore(IN_FLIGHT)

    async def forward(self, raw: Any) -> None:
        try:
            event = event_from_object(raw)
        except msgspec.ValidationError:
            self.report.invalid += 1
            return
        if verify(event) is not None:
            self.report.invalid += 1
            return
        self.report.received += 1
        await self.room.acquire()
        self.pending[event.id] = event.created_at
        await self.local.send_str('["EVENT",' + orjson.dumps(raw).decode() + "]")

    async def read_answers(self) -> None:
        async for message in self.local:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            answer = orjson.loads(message.data)
            if answer[0] != "OK" or len(answer) < 4 or answer[1] not in self.pending:
                continue
            created_at = self.pending.pop(answer[1])
            self.room.release()
            outcome = ok_outcome(bool(answer[2]), str(answer[3]))
            self.report.outcomes[outcome] = self.report.outcomes.get(outcome, 0) + 1
            if outcome in ("stored", "duplicate"):
                self.report.newest = max(self.report.newest or 0, created_at)
        raise ConnectionError("the local relay closed the connection")


async def _follow_once(
    session: aiohttp.ClientSession,
    upstream_url: str,
    local_url: str,
    flt: dict[str, Any],
    report: StreamReport,
    progress: Progress,
) -> None:
    async with (
        session.ws_connect(upstream_url, heartbeat=30, max_msg_size=16 << 20) as upstream,
        session.ws_connect(local_url, heartbeat=30, max_msg_size=16 << 20) as local,
    ):
        report.connects += 1
        subscription = resume_filter(flt, report.newest)
        await upstream.send_str(orjson.dumps(["REQ", SUB_ID, subscription]).decode())
        progress(f"following {upstream_url} with {orjson.dumps(subscription).decode()}")
        mirror = _Mirror(report, local)
        answers = asyncio.create_task(mirror.read_answers())
        try:
            async for message in upstream:
                if answers.done():
                    answers.result()  # raises why the local side ended
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                received = orjson.loads(message.data)
                if received[:2] == ["EVENT", SUB_ID] and len(received) == 3:
                    await mirror.forward(received[2])
                elif received[:2] == ["CLOSED", SUB_ID]:
                    raise ConnectionError(f"upstream closed the subscription: {received[2:]}")
                elif received[:2] == ["EOSE", SUB_ID]:
                    progress(f"caught up: {report.outcomes}")
            raise ConnectionError("the upstream relay closed the connection")
        finally:
            answers.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await answers


async def run_stream(
    *,
    upstream_url: str,
    local_url: str,
    flt: dict[str, Any],
    stop: asyncio.Event | None = None,
    progress: Progress = print,
    backoff_max: float = 30.0,
    sleep: Callable[[float], Any] = asyncio.sleep,
) -> StreamReport:
    """Mirror until `stop` is set (or forever); every drop is followed by a reconnect."""
    report = StreamReport()
    stop = stop or asyncio.Event()
    backoff = 0.5
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            received_before = report.received
            follow = asyncio.create_task(
                _follow_once(session, upstream_url, local_url, flt, report, progress)
            )
            stopped = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({follow, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if follow not in done:
                follow.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await follow
                break
            error = follow.exception()
            if report.received > received_before:
                backoff = 0.5  # it was working: start the backoff again from short
            progress(f"disconnected ({error}); reconnecting in {backoff:.1f}s")
            await sleep(backoff)
            backoff = min(backoff * 2, backoff_max)
    return report
