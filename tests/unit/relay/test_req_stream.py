"""A REQ's stored rows in chunks: the server-side cursor is read no further than the row cap,
each chunk is sized to the room the connection has, and a client that drains nothing gets no
more rows read for it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import msgspec
import pytest

from cluster.nostr.signing import Signer
from cluster.relay.subscriptions import Subscription
from cluster.relay.verbs.req import CHUNK_ROWS, StalledReader, _send_stored
from cluster.store.events import RowCursor, StoredRows
from tests.unit.relay.test_connection_budget import BUDGET, FakeTransport, connection

OLD = datetime.now(UTC) - timedelta(days=1)


def stored(count: int, size: int = 900) -> list[bytes]:
    signer = Signer()
    return [msgspec.json.encode(signer.sign(1, f"{i} " + "r" * size)) for i in range(count)]


class FakeServerCursor:
    def __init__(self, rows: list[tuple[str, datetime]]) -> None:
        self.rows = rows
        self.asked: list[int] = []

    async def fetchmany(self, size: int) -> list[tuple[str, datetime]]:
        self.asked.append(size)
        taken, self.rows = self.rows[:size], self.rows[size:]
        return taken


async def test_the_row_cap_holds_across_fetches() -> None:
    raws = stored(8)
    recent = datetime.now(UTC)
    cursor = FakeServerCursor(
        [(raw.decode(), recent if i == 0 else OLD) for i, raw in enumerate(raws)]
    )
    rows = RowCursor(cast(Any, cursor), max_rows=5)
    first = await rows.fetch(3)
    assert len(first.raws) == 3 and len(first.recent_ids) == 1
    assert len((await rows.fetch(3)).raws) == 2
    assert (await rows.fetch(3)).raws == []
    assert cursor.asked == [3, 2]  # never asked past the cap


async def test_a_short_fetch_ends_the_results_without_another_round_trip() -> None:
    cursor = FakeServerCursor([(raw.decode(), OLD) for raw in stored(4)])
    rows = RowCursor(cast(Any, cursor), max_rows=100)
    assert len((await rows.fetch(3)).raws) == 3
    assert len((await rows.fetch(3)).raws) == 1
    assert (await rows.fetch(3)).raws == []
    assert cursor.asked == [3, 3]


class FakeRows:
    """What `_send_stored` reads from: as many rows as asked, from an endless supply."""

    def __init__(self) -> None:
        self.supply = stored(CHUNK_ROWS)
        self.asked: list[int] = []

    async def fetch(self, rows: int) -> StoredRows:
        self.asked.append(rows)
        return StoredRows(self.supply[:rows], set())


async def test_rows_are_read_only_as_fast_as_the_client_drains() -> None:
    conn = connection(FakeTransport(kernel_room=0))  # no writer: nothing leaves
    subscription = Subscription(conn, "s", ())
    rows = FakeRows()
    send = _send_stored(conn, subscription, cast(Any, rows), set(), set(), stall_timeout=60.0)
    task = asyncio.create_task(send)
    for _ in range(20):
        await asyncio.sleep(0)
    assert not task.done()  # waiting for room
    assert conn.queued_bytes < 2 * BUDGET  # about one budget, whatever the REQ asked for
    # Each fetch fits the room left (a row is about 1 KB here), so few rows were read.
    assert sum(rows.asked) * 1000 < 2 * BUDGET
    conn.abort(1008, "test")
    assert await asyncio.wait_for(task, 2) is False


async def test_a_req_whose_client_makes_no_room_ends_after_the_stall_timeout() -> None:
    """It must not hold its database connection and query slot while the client sleeps."""
    conn = connection(FakeTransport(kernel_room=0))
    subscription = Subscription(conn, "s", ())
    send = _send_stored(conn, subscription, cast(Any, FakeRows()), set(), set(), stall_timeout=0.2)
    with pytest.raises(StalledReader):
        await asyncio.wait_for(send, 5)
