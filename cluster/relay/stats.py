"""Per-worker counters for /health, mirrored into Prometheus metrics for /metrics."""

from __future__ import annotations

from dataclasses import dataclass

from cluster import metrics


@dataclass
class RelayStats:
    connections: int = 0

    def count_ok(self, message: str) -> None:
        metrics.OK_ANSWERS.labels(metrics.ok_prefix(message)).inc()

    def connected(self) -> None:
        self.connections += 1
        metrics.CONNECTIONS.inc()

    def disconnected(self, reason: str) -> None:
        self.connections -= 1
        metrics.CONNECTIONS.dec()
        metrics.DISCONNECTS.labels(_reason_label(reason)).inc()

    def delivered(self) -> None:
        metrics.EVENTS_DELIVERED.inc()


def _reason_label(reason: str) -> str:
    """Bounded label values: protocol errors carry details that would explode cardinality."""
    return reason.split(":", 1)[0][:40]
