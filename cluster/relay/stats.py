"""Per-worker counters: connections, subscriptions, answers by prefix, disconnects by reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class RelayStats:
    connections: int = 0
    ok_by_prefix: Counter[str] = field(default_factory=Counter)
    disconnects: Counter[str] = field(default_factory=Counter)
    events_delivered: int = 0

    def count_ok(self, message: str) -> None:
        prefix = message.split(":", 1)[0] if message else "accepted"
        self.ok_by_prefix[prefix] += 1
