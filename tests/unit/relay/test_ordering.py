"""Per-connection ordering: EVENTs checked concurrently reach the writer in the order sent."""

from __future__ import annotations

import asyncio
import random

from cluster.relay.ordering import Line, Place


async def test_places_queue_in_the_order_they_joined_whatever_order_checks_finish() -> None:
    line = Line()
    places = [line.join() for _ in range(20)]
    queued: list[int] = []
    rng = random.Random(7)

    async def check_then_queue(number: int, place: Place) -> None:
        await asyncio.sleep(rng.random() / 200)  # verification takes a different time for each
        await place.wait_turn()
        queued.append(number)
        place.done()

    await asyncio.gather(*(check_then_queue(n, p) for n, p in reversed(list(enumerate(places)))))
    assert queued == list(range(20))


async def test_a_place_given_up_lets_the_next_one_go() -> None:
    line = Line()
    first, second = line.join(), line.join()
    first.done()  # e.g. refused before reaching the writer
    await asyncio.wait_for(second.wait_turn(), 1.0)


async def test_the_next_place_waits_until_the_previous_one_is_done() -> None:
    line = Line()
    first, second = line.join(), line.join()
    waiter = asyncio.ensure_future(second.wait_turn())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    first.done()
    await asyncio.wait_for(waiter, 1.0)


async def test_the_first_place_never_waits_and_done_is_idempotent() -> None:
    place = Line().join()
    await asyncio.wait_for(place.wait_turn(), 1.0)
    place.done()
    place.done()
    await asyncio.wait_for(place.wait_turn(), 1.0)
