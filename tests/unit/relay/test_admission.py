"""Query admission: a per-worker slot limit, round-robin across addresses, bounded queues,
cancellation that never leaks a slot. Driven by event-loop turns, never by wall-clock sleeps."""

from __future__ import annotations

import asyncio

import pytest

from cluster.relay.admission import QueriesWaiting, QueryAdmission


async def settle(turns: int = 10) -> None:
    """Let every ready task run until it blocks again."""
    for _ in range(turns):
        await asyncio.sleep(0)


class Queries:
    """Queries that, once admitted, record their address and hold the slot until finished."""

    def __init__(self, admission: QueryAdmission) -> None:
        self.admission = admission
        self.admitted: list[str] = []
        self.holding: list[asyncio.Event] = []
        self.peak = 0
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, address: str) -> asyncio.Task[None]:
        task = asyncio.create_task(self._run(address))
        self.tasks.append(task)
        return task

    async def _run(self, address: str) -> None:
        async with self.admission.slot(address):
            self.peak = max(self.peak, self.admission.running)
            self.admitted.append(address)
            done = asyncio.Event()
            self.holding.append(done)
            await done.wait()

    async def finish_oldest(self) -> None:
        self.holding.pop(0).set()
        await settle()

    async def finish_all(self) -> None:
        while self.holding:
            await self.finish_oldest()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_free_slots_admit_at_once_and_the_limit_holds() -> None:
    admission = QueryAdmission(limit=3)
    queries = Queries(admission)
    for address in ["a", "b", "c", "d", "e"]:
        queries.start(address)
    await settle()
    assert queries.admitted == ["a", "b", "c"]
    assert admission.running == 3 and admission.waiting() == 2
    await queries.finish_all()
    assert queries.peak == 3
    assert admission.running == 0 and admission.waiting() == 0


async def test_a_flooding_address_waits_behind_itself_not_in_front_of_others() -> None:
    admission = QueryAdmission(limit=1, queue_per_address=100)
    queries = Queries(admission)
    queries.start("flood")  # takes the only slot
    await settle()
    for _ in range(6):
        queries.start("flood")
    await settle()
    queries.start("b")
    queries.start("c")
    queries.start("b")
    await settle()
    assert admission.waiting("flood") == 6 and admission.waiting() == 9
    await queries.finish_all()
    # Round-robin: flood, b, c take turns; flood's backlog drains last.
    assert queries.admitted == [
        "flood",
        "flood",
        "b",
        "c",
        "flood",
        "b",
        "flood",
        "flood",
        "flood",
        "flood",
    ]


async def test_many_addresses_each_get_a_turn_before_anyone_gets_a_second() -> None:
    admission = QueryAdmission(limit=4, queue_per_address=8)
    queries = Queries(admission)
    addresses = [f"10.0.{n // 256}.{n % 256}" for n in range(200)]
    for _ in range(4):  # the first address grabs every slot
        queries.start(addresses[0])
    await settle()
    for _ in range(3):
        for address in addresses:
            queries.start(address)
    await settle()
    assert admission.waiting() == 600
    await queries.finish_all()
    served = queries.admitted[4:]
    for round_ in range(3):
        assert served[round_ * 200 : (round_ + 1) * 200] == addresses
    assert queries.peak == 4


async def test_a_full_queue_refuses_at_once_and_only_that_address() -> None:
    admission = QueryAdmission(limit=1, queue_per_address=3)
    queries = Queries(admission)
    queries.start("x")
    await settle()
    for _ in range(3):
        queries.start("flood")
    await settle()
    with pytest.raises(QueriesWaiting):
        async with admission.slot("flood"):
            pytest.fail("admitted past its queue bound")
    assert admission.waiting("flood") == 3  # the refusal took no place in the queue
    other = queries.start("y")  # another address still queues
    await settle()
    assert not other.done() and admission.waiting("y") == 1
    await queries.finish_all()
    assert queries.admitted == ["x", "flood", "y", "flood", "flood"]
    # Once drained, the address may queue again.
    assert admission.waiting() == 0 and admission.running == 0


async def test_a_cancelled_waiter_leaves_no_slot_taken_and_no_place_in_line() -> None:
    admission = QueryAdmission(limit=1, queue_per_address=2)
    queries = Queries(admission)
    queries.start("a")
    await settle()
    doomed = queries.start("b")
    queries.start("c")
    await settle()
    doomed.cancel()
    await settle()
    assert admission.waiting("b") == 0 and admission.waiting() == 1
    await queries.finish_all()
    assert doomed.cancelled()
    assert queries.admitted == ["a", "c"]
    assert admission.running == 0 and admission.waiting() == 0


async def test_a_waiter_cancelled_just_after_its_grant_passes_the_slot_on() -> None:
    admission = QueryAdmission(limit=1)
    queries = Queries(admission)
    queries.start("a")
    await settle()
    granted_then_cancelled = queries.start("b")
    queries.start("c")
    await settle()
    # Finish "a" and cancel "b" in the same turn: "b" is granted the slot but never runs.
    queries.holding.pop(0).set()
    await asyncio.sleep(0)  # "a" leaves its block and grants "b"
    assert admission.running == 1 and admission.waiting("b") == 0
    granted_then_cancelled.cancel()
    await settle()
    assert granted_then_cancelled.cancelled()
    assert queries.admitted == ["a", "c"]  # "c" got the slot "b" gave back
    await queries.finish_all()
    assert admission.running == 0 and admission.waiting() == 0


async def test_a_query_that_fails_inside_its_slot_releases_it() -> None:
    admission = QueryAdmission(limit=1)
    with pytest.raises(RuntimeError):
        async with admission.slot("a"):
            raise RuntimeError("statement timeout")
    assert admission.running == 0
    async with admission.slot("b"):
        assert admission.running == 1
