"""EventWriter (group commit) against a fake BatchSaver: lanes, batching, retries, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import psycopg
import pytest

from cluster.nostr.event import Event
from cluster.store.writer import (
    EventWriter,
    SaveOutcome,
    SaveRequest,
    StoreUnavailable,
)


def request(content: str) -> SaveRequest:
    """A request the fake saver tells apart by content (no signature needed: nothing verifies)."""
    event = Event("00" * 32, "11" * 32, created_at=1, kind=1, tags=[], content=content, sig="")
    return SaveRequest(event, raw=content)


class FakeSaver:
    """Records each batch with the lane task that committed it; optionally holds or fails."""

    def __init__(self, fail: Callable[[list[str]], Exception | None] = lambda batch: None) -> None:
        self.batches: list[tuple[str, list[str]]] = []
        self.fail = fail
        self.gates: dict[str, asyncio.Event] = {}  # content -> released when set
        self.entered = asyncio.Event()

    def hold(self, content: str) -> asyncio.Event:
        self.gates[content] = asyncio.Event()
        return self.gates[content]

    async def save_many(self, requests: Sequence[SaveRequest]) -> list[SaveOutcome]:
        contents = [item.event.content for item in requests]
        task = asyncio.current_task()
        assert task is not None
        self.batches.append((task.get_name(), contents))
        self.entered.set()
        for content in contents:
            if content in self.gates:
                await self.gates[content].wait()
        error = self.fail(contents)
        if error is not None:
            raise error
        return [SaveOutcome.STORED] * len(contents)

    def committed(self) -> list[str]:
        return [content for _, batch in self.batches for content in batch]


async def until(condition: Callable[[], bool]) -> None:
    """Let the writer's tasks run until `condition` holds (event-loop turns, not wall time)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def started(saver: FakeSaver, batch_max: int = 100, lanes: int = 1) -> EventWriter:
    writer = EventWriter(saver, batch_max, lanes=lanes)
    writer.start()
    return writer


async def test_events_queued_while_a_batch_commits_share_the_next_batch() -> None:
    saver = FakeSaver()
    release = saver.hold("first")
    writer = await started(saver, batch_max=100)
    first = writer.submit(request("first"))
    await until(lambda: len(saver.batches) == 1)
    rest = [writer.submit(request(f"e{i}")) for i in range(5)]
    release.set()
    assert await asyncio.gather(first, *rest) == [SaveOutcome.STORED] * 6
    assert [batch for _, batch in saver.batches] == [["first"], [f"e{i}" for i in range(5)]]
    await writer.close()


async def test_a_batch_never_exceeds_batch_max() -> None:
    saver = FakeSaver()
    release = saver.hold("first")
    writer = await started(saver, batch_max=3)
    futures = [writer.submit(request("first"))]
    await until(lambda: len(saver.batches) == 1)
    futures += [writer.submit(request(f"e{i}")) for i in range(7)]
    release.set()
    await asyncio.gather(*futures)
    sizes = [len(batch) for _, batch in saver.batches]
    assert sizes == [1, 3, 3, 1]
    assert saver.committed() == ["first", *(f"e{i}" for i in range(7))]
    await writer.close()


async def test_a_key_always_uses_the_same_lane_and_a_lane_commits_in_queue_order() -> None:
    saver = FakeSaver()
    writer = await started(saver, batch_max=2, lanes=3)
    submitted = [f"k{key}-{n}" for n in range(4) for key in range(6)]
    await asyncio.gather(*(writer.submit(request(c), lane_key=key_of(c)) for c in submitted))
    lanes_of: dict[int, set[str]] = {}
    for lane, batch in saver.batches:
        for content in batch:
            lanes_of.setdefault(key_of(content), set()).add(lane)
    assert lanes_of == {key: {f"event-writer-{key % 3}"} for key in range(6)}
    for number in range(3):
        in_lane = [
            c for name, batch in saver.batches if name == f"event-writer-{number}" for c in batch
        ]
        assert in_lane == [c for c in submitted if key_of(c) % 3 == number]
    await writer.close()


def key_of(content: str) -> int:
    return int(content[1 : content.index("-")])


async def test_lanes_commit_independently() -> None:
    """A lane stuck in a slow commit does not hold back another lane's events."""
    saver = FakeSaver()
    release = saver.hold("slow")
    writer = await started(saver, lanes=2)
    slow = writer.submit(request("slow"), lane_key=0)
    behind = writer.submit(request("behind slow"), lane_key=2)  # same lane as key 0
    other = writer.submit(request("other lane"), lane_key=1)
    assert await other is SaveOutcome.STORED
    assert not slow.done() and not behind.done()
    release.set()
    assert [await slow, await behind] == [SaveOutcome.STORED] * 2
    lanes = {content: lane for lane, batch in saver.batches for content in batch}
    assert lanes == {
        "slow": "event-writer-0",
        "behind slow": "event-writer-0",
        "other lane": "event-writer-1",
    }
    await writer.close()


async def test_a_failed_batch_is_retried_one_event_per_transaction() -> None:
    """One bad event (or a deadlock) does not fail its neighbours."""
    saver = FakeSaver(fail=lambda batch: ValueError("bad event") if "bad" in batch else None)
    release = saver.hold("first")
    writer = await started(saver)
    first = writer.submit(request("first"))
    await until(lambda: len(saver.batches) == 1)
    good1, bad, good2 = (writer.submit(request(c)) for c in ("good1", "bad", "good2"))
    release.set()
    assert await first is SaveOutcome.STORED
    assert await good1 is SaveOutcome.STORED
    assert await good2 is SaveOutcome.STORED
    with pytest.raises(StoreUnavailable, match="bad event"):
        await bad
    assert [batch for _, batch in saver.batches] == [
        ["first"],
        ["good1", "bad", "good2"],
        ["good1"],
        ["bad"],
        ["good2"],
    ]
    await writer.close()


@pytest.mark.parametrize(
    "failure",
    [
        OSError("connection refused"),
        psycopg.OperationalError("server closed the connection unexpectedly"),
    ],
)
async def test_a_connection_failure_fails_the_whole_batch_without_retrying(
    failure: Exception,
) -> None:
    saver = FakeSaver(fail=lambda batch: failure if len(batch) > 1 else None)
    release = saver.hold("first")
    writer = await started(saver)
    first = writer.submit(request("first"))
    await until(lambda: len(saver.batches) == 1)
    batch = [writer.submit(request(f"e{i}")) for i in range(3)]
    release.set()
    assert await first is SaveOutcome.STORED
    for future in batch:
        with pytest.raises(StoreUnavailable):
            await future
    assert len(saver.batches) == 2  # no one-by-one retry against a database that is gone
    # The lane survives: the next event commits once the database is back.
    assert await writer.save(request("after")) is SaveOutcome.STORED
    await writer.close()


async def test_close_commits_everything_queued_then_stops() -> None:
    saver = FakeSaver()
    release = saver.hold("first")
    writer = await started(saver, batch_max=2, lanes=2)
    futures = [writer.submit(request("first"), lane_key=0)]
    await until(lambda: len(saver.batches) == 1)
    futures += [writer.submit(request(f"e{i}"), lane_key=i) for i in range(5)]
    closing = asyncio.create_task(writer.close())
    await until(lambda: {"e1", "e3"} <= set(saver.committed()))  # lane 1 is free to commit
    assert not closing.done()
    assert not any(futures[i + 1].done() for i in (0, 2, 4))  # lane 0 waits behind "first"
    release.set()
    await closing
    assert all(future.done() and future.result() is SaveOutcome.STORED for future in futures)
    assert sorted(saver.committed()) == sorted(["first", *(f"e{i}" for i in range(5))])


async def test_close_of_a_writer_never_started_returns() -> None:
    await EventWriter(FakeSaver(), 10).close()


async def test_a_busy_lane_lingers_to_gather_the_events_that_arrive_meanwhile() -> None:
    saver = FakeSaver()
    writer = EventWriter(saver, 100, lanes=1, linger=0.05)
    writer.start()
    await asyncio.gather(*(writer.submit(request(f"a{i}")) for i in range(3)))  # one busy batch
    first = writer.submit(request("b0"))
    await asyncio.sleep(0.01)  # within the linger: joins the same commit
    second = writer.submit(request("b1"))
    await asyncio.gather(first, second)
    assert [batch for _, batch in saver.batches] == [["a0", "a1", "a2"], ["b0", "b1"]]
    await writer.close()


async def test_an_idle_lane_commits_a_lone_event_without_lingering() -> None:
    saver = FakeSaver()
    writer = EventWriter(saver, 100, lanes=1, linger=60.0)  # a linger would time the test out
    writer.start()
    await asyncio.wait_for(writer.submit(request("alone")), 5.0)
    await asyncio.wait_for(writer.submit(request("again")), 5.0)
    assert [batch for _, batch in saver.batches] == [["alone"], ["again"]]
    await writer.close()
