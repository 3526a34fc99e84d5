"""`relay-cluster sync`: make this cluster and a remote NIP-77 relay hold the same events.

1. The local item list, (created_at, id) of every stored event matching the filter, comes
   from the local database with the query the relay's own NEG-OPEN uses (cluster/store/items.py).
2. The tool plays the negentropy client (cluster/nostr/negentropy.py) against the remote relay:
   NEG-OPEN / NEG-MSG until the difference is known (`have`: only here, `need`: only there).
3. down: the `need` events are fetched from the remote by REQ with ids, `batch` at a time, and
   each is checked (id and BIP-340 signature) before it is published to the *local relay* with
   EVENT, waiting for its OK. Publishing, rather than writing to the database, keeps every
   rule of the write path in one place: replaceable and deletion semantics, policies, prices
   (a priced kind is refused without payment and counted as refused), the fan-out to live
   subscribers. up: the `have` events are read from the local database and published to the
   remote the same way.

Nothing is remembered between runs: a run that stops half-way leaves what it stored stored,
and the next run reconciles again and transfers only what is still missing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import msgspec
import orjson
from psycopg_pool import AsyncConnectionPool

from cluster.nostr.event import event_from_object, verify
from cluster.nostr.filters import FilterLimits, parse_filter
from cluster.nostr.negentropy import Negentropy, Storage, StorageBuilder
from cluster.store.events import EventStore
from cluster.store.items import fetch_items

Direction = Literal["down", "up", "both"]
Progress = Callable[[str], None]

FRAME_SIZE_LIMIT = 30_000
"""Our negentropy messages stay below 64 KiB of hex: within most relays' message limit."""
MAX_LOCAL_ITEMS = 10_000_000
RECEIVE_TIMEOUT = 30.0
FILTER_LIMITS = FilterLimits(max_limit=1_000_000, default_limit=1_000_000, max_values=100_000)


class SyncError(RuntimeError):
    """The remote refused (NEG-ERR, CLOSED) or broke the protocol; the message says which."""


class Difference(msgspec.Struct, frozen=True):
    have: list[str]  # ids only we hold
    need: list[str]  # ids only the remote holds
    rounds: int


@dataclass
class Report:
    local_items: int = 0
    difference: Difference | None = None
    downloaded: dict[str, int] = field(default_factory=dict)  # outcome -> events
    uploaded: dict[str, int] = field(default_factory=dict)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def ok_outcome(accepted: bool, message: str) -> str:
    """Tally OK answers by their NIP-01 prefix ("stored" for a plain accept)."""
    prefix = message.split(":", 1)[0] if ":" in message else ""
    if accepted:
        return "duplicate" if prefix == "duplicate" else "stored"
    return prefix or "refused"


async def _receive(ws: aiohttp.ClientWebSocketResponse) -> list[Any]:
    msg = await ws.receive(timeout=RECEIVE_TIMEOUT)
    if msg.type != aiohttp.WSMsgType.TEXT:
        raise SyncError(f"remote closed the connection ({msg.type.name})")
    message = orjson.loads(msg.data)
    if not isinstance(message, list) or not message:
        raise SyncError(f"unexpected message: {msg.data[:200]}")
    return message


async def reconcile(
    ws: aiohttp.ClientWebSocketResponse,
    flt: dict[str, Any],
    storage: Storage,
    *,
    sub_id: str = "sync",
    frame_size_limit: int = FRAME_SIZE_LIMIT,
) -> Difference:
    """Run one NIP-77 reconciliation as the client over an open socket."""
    negentropy = Negentropy(storage, frame_size_limit)
    await ws.send_str(_json(["NEG-OPEN", sub_id, flt, negentropy.initiate().hex()]))
    have: list[bytes] = []
    need: list[bytes] = []
    rounds = 0
    while True:
        message = await _receive(ws)
        if message[0] == "NOTICE":
            raise SyncError(f"remote: {message[1:]}")
        if len(message) < 3 or message[1] != sub_id:
            continue
        if message[0] == "NEG-ERR":
            raise SyncError(f"remote refused: {message[2]}")
        if message[0] != "NEG-MSG":
            continue
        rounds += 1
        step = negentropy.client_reconcile(bytes.fromhex(message[2]))
        have += step.have
        need += step.need
        if step.message is None:
            await ws.send_str(_json(["NEG-CLOSE", sub_id]))
            return Difference([i.hex() for i in have], [i.hex() for i in need], rounds)
        await ws.send_str(_json(["NEG-MSG", sub_id, step.message.hex()]))


async def publish_all(ws: aiohttp.ClientWebSocketResponse, raws: Sequence[bytes]) -> list[str]:
    """Send the events, then wait for each one's OK; the outcomes in order."""
    pending: dict[str, int] = {}
    for index, raw in enumerate(raws):
        pending[orjson.loads(raw)["id"]] = index
        await ws.send_str('["EVENT",' + raw.decode() + "]")
    outcomes = [""] * len(raws)
    while pending:
        message = await _receive(ws)
        if message[0] == "OK" and len(message) >= 4 and message[1] in pending:
            outcomes[pending.pop(message[1])] = ok_outcome(bool(message[2]), str(message[3]))
    return outcomes


async def fetch_events(
    ws: aiohttp.ClientWebSocketResponse, ids: Sequence[str], sub_id: str = "sync-fetch"
) -> list[bytes]:
    """The events with these ids the relay serves, as JSON, checked (id and signature)."""
    await ws.send_str(_json(["REQ", sub_id, {"ids": list(ids), "limit": len(ids)}]))
    wanted = set(ids)
    raws: list[bytes] = []
    while True:
        message = await _receive(ws)
        if message[1:2] != [sub_id]:
            continue
        if message[0] == "CLOSED":
            raise SyncError(f"remote closed the REQ: {message[2:]}")
        if message[0] == "EOSE":
            await ws.send_str(_json(["CLOSE", sub_id]))
            return raws
        if message[0] == "EVENT" and len(message) == 3:
            try:
                event = event_from_object(message[2])
            except msgspec.ValidationError:
                continue
            if event.id in wanted and verify(event) is None:
                wanted.discard(event.id)
                raws.append(orjson.dumps(message[2]))


async def local_storage(pool: AsyncConnectionPool, flt: dict[str, Any]) -> Storage:
    items = await fetch_items(
        pool, parse_filter(flt, FILTER_LIMITS), int(time.time()), frozenset(), MAX_LOCAL_ITEMS
    )
    if items.count > MAX_LOCAL_ITEMS:
        raise SyncError(f"more than {MAX_LOCAL_ITEMS} local events match: narrow the filter")
    builder = StorageBuilder.from_big_endian(items.timestamps, items.ids)
    builder.step(items.count)
    return builder.storage()


async def local_events(store: EventStore, ids: Sequence[str]) -> list[bytes]:
    flt = parse_filter({"ids": list(ids), "limit": len(ids)}, FILTER_LIMITS)
    return await store.query([flt], int(time.time()))


def _tally(into: dict[str, int], outcomes: Sequence[str]) -> None:
    for outcome in outcomes:
        into[outcome] = into.get(outcome, 0) + 1


@dataclass(frozen=True)
class SyncPlan:
    remote_url: str
    local_url: str
    flt: dict[str, Any]
    direction: Direction
    batch: int
    progress: Progress


async def run_sync(
    *,
    remote_url: str,
    local_url: str,
    database_url: str,
    flt: dict[str, Any],
    direction: Direction = "both",
    batch: int = 100,
    progress: Progress = print,
) -> Report:
    """Reconcile, then transfer; connection failures become SyncError (the CLI exits 1)."""
    plan = SyncPlan(remote_url, local_url, flt, direction, batch, progress)
    report = Report()
    pool = AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False)
    await pool.open()
    try:
        await _sync(plan, pool, report)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise SyncError(f"connection failed: {exc!r}") from exc
    finally:
        await pool.close()
    return report


async def _sync(plan: SyncPlan, pool: AsyncConnectionPool, report: Report) -> None:
    remote_url, local_url, flt = plan.remote_url, plan.local_url, plan.flt
    direction, batch, progress = plan.direction, plan.batch, plan.progress
    storage = await local_storage(pool, flt)
    report.local_items = len(storage)
    progress(f"local: {len(storage)} events match {orjson.dumps(flt).decode()}")
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(remote_url, max_msg_size=16 << 20) as remote,
    ):
        difference = await reconcile(remote, flt, storage)
        report.difference = difference
        progress(
            f"reconciled with {remote_url} in {difference.rounds} rounds: "
            f"{len(difference.need)} to download, {len(difference.have)} to upload"
        )
        if direction in ("down", "both") and difference.need:
            async with session.ws_connect(local_url, max_msg_size=16 << 20) as local:
                for start in range(0, len(difference.need), batch):
                    ids = difference.need[start : start + batch]
                    raws = await fetch_events(remote, ids)
                    _tally(report.downloaded, await publish_all(local, raws))
                    _tally(report.downloaded, ["unavailable"] * (len(ids) - len(raws)))
                    done = min(start + batch, len(difference.need))
                    progress(f"down {done}/{len(difference.need)} {report.downloaded}")
        if direction in ("up", "both") and difference.have:
            store = EventStore(pool)
            for start in range(0, len(difference.have), batch):
                ids = difference.have[start : start + batch]
                raws = await local_events(store, ids)
                _tally(report.uploaded, await publish_all(remote, raws))
                done = min(start + batch, len(difference.have))
                progress(f"up {done}/{len(difference.have)} {report.uploaded}")


def parse_filter_argument(text: str) -> dict[str, Any]:
    """`--filter` is one NIP-01 filter as JSON; validated here so a typo fails before I/O."""
    try:
        flt = orjson.loads(text)
        parse_filter(flt, FILTER_LIMITS)
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise SyncError(f"--filter: {exc}") from exc
    if not isinstance(flt, dict):
        raise SyncError("--filter must be a JSON object")
    return flt


def print_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
