"""A bounded memory of recently delivered event ids, so no subscription sees an event twice."""

from __future__ import annotations

from collections import OrderedDict


class RecentIds:
    """Insertion-ordered set with a size cap; the oldest ids are forgotten first."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, event_id: str) -> bool:
        """Remember `event_id`; False if it was already remembered (a repeat)."""
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._ids)
