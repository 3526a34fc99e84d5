"""What each scenario listens for: answers matched to what was sent, timed from when it was due.

A tracker's `handle` runs for every text frame of its sockets, so it looks at the frame's first
bytes and decodes only the messages it needs.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson


def ok_prefix(message: str) -> str:
    """The relay's message, shortened, as an error key (hex runs elided so keys aggregate)."""
    text = re.sub(r"[0-9a-f]{16,}", "…", message or "rejected")
    return text[:80]


@dataclass
class OkTracker:
    """EVENT → OK: latency from each event's scheduled send time."""

    pending: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    duplicates: int = 0
    last_answer: float = 0.0
    answer_times: list[float] = field(default_factory=list)
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    sending_done: bool = False

    def handle(self, data: str) -> None:
        if not data.startswith('["OK"'):
            if data.startswith('["NOTICE"'):
                self.errors["notice"] += 1
            return
        message = orjson.loads(data)
        due = self.pending.pop(message[1], None)
        if due is None:
            return
        now = time.perf_counter()
        self.last_answer = now
        self.answer_times.append(now)
        if message[2]:
            self.accepted += 1
            self.latencies.append(now - due)
            if message[3].startswith("duplicate"):
                self.duplicates += 1
        else:
            self.errors[f"OK false: {ok_prefix(message[3])}"] += 1
        if self.sending_done and not self.pending:
            self.drained.set()

    def reset(self) -> None:
        """A clean slate after an unmeasured warm-up."""
        self.pending.clear()
        self.latencies.clear()
        self.answer_times.clear()
        self.errors.clear()
        self.accepted = self.duplicates = 0
        self.last_answer = 0.0


@dataclass
class DeliveryTracker:
    """Published → received: latency from each event's scheduled send time, per delivery."""

    published: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    received: int = 0
    unknown: int = 0
    eose: int = 0
    eose_done: asyncio.Event = field(default_factory=asyncio.Event)
    eose_expected: int = 0
    closed: Counter[str] = field(default_factory=Counter)

    def handle(self, data: str) -> None:
        if data.startswith('["EVENT"'):
            now = time.perf_counter()
            marker = data.find('"id":"')
            event_id = data[marker + 6 : marker + 70] if marker >= 0 else ""
            due = self.published.get(event_id)
            if due is None:
                self.unknown += 1
                return
            self.received += 1
            self.latencies.append(now - due)
        elif data.startswith('["EOSE"'):
            self.eose += 1
            if self.eose >= self.eose_expected:
                self.eose_done.set()
        elif data.startswith('["CLOSED"'):
            self.closed[ok_prefix(orjson.loads(data)[2])] += 1


@dataclass
class QueryTracker:
    """REQ → EOSE per query shape, and the events each shape returned."""

    inflight: dict[str, tuple[float, str]] = field(default_factory=dict)
    by_shape: dict[str, list[float]] = field(default_factory=dict)
    events: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    answered: int = 0
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    sending_done: bool = False

    def handle(self, data: str) -> None:
        if data.startswith('["EVENT"'):
            end = data.find('"', 10)
            sub_id = data[10:end]
            entry = self.inflight.get(sub_id)
            if entry is not None:
                self.events[entry[1]] += 1
            return
        message = orjson.loads(data)
        if message[0] not in ("EOSE", "CLOSED"):
            return
        entry = self.inflight.pop(message[1], None)
        if entry is None:
            return
        self.answered += 1
        if message[0] == "EOSE":
            self.by_shape.setdefault(entry[1], []).append(time.perf_counter() - entry[0])
        else:
            self.errors[f"CLOSED: {ok_prefix(message[2])}"] += 1
        if self.sending_done and not self.inflight:
            self.drained.set()


@dataclass
class Awaiting:
    """One socket's REQs: when they went out and how many answers are still due."""

    sent_at: float
    due: int


@dataclass
class SubscribeTracker:
    """Held sockets subscribing: REQ → EOSE (or CLOSED) for each of a socket's `subs` REQs."""

    sockets: int
    eose_latencies: list[float] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    unexpected_events: int = 0
    waiting: dict[int, Awaiting] = field(default_factory=dict)
    """By socket index."""
    all_answered: asyncio.Event = field(default_factory=asyncio.Event)

    def expect(self, index: int, subs: int) -> None:
        self.waiting[index] = Awaiting(time.perf_counter(), subs)

    def pending(self) -> int:
        """REQs sent but not answered yet."""
        return sum(state.due for state in self.waiting.values())

    def handler(self, index: int) -> Callable[[str], None]:
        def handle(data: str) -> None:
            if data.startswith('["EVENT"'):
                self.unexpected_events += 1
                return
            state = self.waiting.get(index)
            if state is None:
                return
            if data.startswith('["EOSE"'):
                self.eose_latencies.append(time.perf_counter() - state.sent_at)
            elif data.startswith('["CLOSED"'):
                self.refused[ok_prefix(orjson.loads(data)[2])] += 1
            else:
                return
            state.due -= 1
            if state.due <= 0:
                del self.waiting[index]
                self.sockets -= 1
                if self.sockets <= 0:
                    self.all_answered.set()

        return handle
