"""RecentIds: the bounded delivery memory that turns fan-out repeats into no-ops."""

from __future__ import annotations

from cluster.bus.dedup import RecentIds


def test_a_repeat_is_detected() -> None:
    recent = RecentIds(10)
    assert recent.add("a") is True
    assert recent.add("b") is True
    assert recent.add("a") is False
    assert len(recent) == 2


def test_memory_is_bounded_and_the_oldest_is_forgotten_first() -> None:
    recent = RecentIds(3)
    for event_id in ("a", "b", "c", "d"):
        assert recent.add(event_id) is True
    assert len(recent) == 3
    assert recent.add("b") is False  # still remembered
    assert recent.add("c") is False
    assert recent.add("d") is False
    assert recent.add("a") is True  # the oldest was forgotten, so it counts as new again
    assert len(recent) == 3


def test_a_repeat_does_not_refresh_an_id() -> None:
    """Order is first arrival: seeing an id again does not keep it longer (insertion order)."""
    recent = RecentIds(2)
    recent.add("a")
    recent.add("b")
    assert recent.add("a") is False
    recent.add("c")  # forgets "a", the first to arrive, although it was seen last
    assert recent.add("b") is False
    assert recent.add("a") is True
