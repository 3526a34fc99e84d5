"""Places in line: a connection's EVENTs are checked concurrently, but reach the writer in the
order the client sent them, so a client's increasing payment nonces are charged in order."""

from __future__ import annotations

import asyncio


class Place:
    """One EVENT's place in its connection's line."""

    __slots__ = ("_mine", "_previous")

    def __init__(self, previous: asyncio.Event | None) -> None:
        self._previous = previous
        self._mine = asyncio.Event()

    async def wait_turn(self) -> None:
        """Until every EVENT the client sent earlier has been queued (or given up)."""
        if self._previous is not None:
            await self._previous.wait()
            self._previous = None

    def done(self) -> None:
        """Queued, or answered without storing: let the next one go."""
        self._mine.set()


class Line:
    def __init__(self) -> None:
        self._last: asyncio.Event | None = None

    def join(self) -> Place:
        place = Place(self._last)
        self._last = place._mine
        return place
