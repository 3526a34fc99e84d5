"""Prometheus metrics for one worker, aggregated per instance in gunicorn's multiprocess mode.

`relay-cluster serve` points PROMETHEUS_MULTIPROC_DIR at a fresh directory before the workers
fork, so GET /metrics on any worker reports the whole instance. Without it (tests importing the
app directly) the process-local registry is used.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import values as _values

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class _Pid:
    """os.getpid() is a system call (glibc no longer caches it) and prometheus_client's
    multiprocess values ask for it on every update, several times per EVENT; the pid only
    changes at fork, so it is cached and refreshed in the child."""

    value = os.getpid()

    @classmethod
    def refresh(cls) -> None:
        cls.value = os.getpid()

    @classmethod
    def get(cls) -> int:
        return cls.value


# How often a worker writes its buffered metric updates to its multiprocess file.
FLUSH_INTERVAL = 0.5


class _BufferedValue:
    """A multiprocess value whose increments are summed in memory and written at a flush.

    prometheus_client's multiprocess value takes a lock and writes the mmaped file on every
    update, several per EVENT; here an update is one float addition, and `flush_values`
    (every FLUSH_INTERVAL in each worker, and before this worker renders /metrics) writes each
    changed value once. A worker that dies by SIGKILL loses at most that interval of counts.
    """

    _multiprocess = True
    _mmaped: Any = None  # the MmapedValue class, chosen once MULTIPROC_ENV is known

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._inner = self._mmaped(*args, **kwargs)
        self._pending = 0.0
        self._queued = False

    def inc(self, amount: float) -> None:
        self._pending += amount
        if not self._queued:
            self._queued = True
            _PENDING.append(self)

    def set(self, value: float, timestamp: float | None = None) -> None:
        self._pending = 0.0  # a set replaces what was added before it
        self._inner.set(value, timestamp)

    def get(self) -> float:
        return float(self._inner.get()) + self._pending

    def set_exemplar(self, exemplar: object) -> None:
        return None

    def get_exemplar(self) -> None:
        return None

    def flush(self) -> None:
        self._queued = False
        if self._pending:
            pending, self._pending = self._pending, 0.0
            self._inner.inc(pending)


_PENDING: list[_BufferedValue] = []


def flush_values() -> None:
    """Write every buffered update to this process's multiprocess file."""
    pending = list(_PENDING)
    _PENDING.clear()
    for value in pending:
        value.flush()


os.register_at_fork(after_in_child=_Pid.refresh)
if os.environ.get(MULTIPROC_ENV):
    _BufferedValue._mmaped = _values.MultiProcessValue(process_identifier=_Pid.get)  # type: ignore[no-untyped-call]
    _values.ValueClass = _BufferedValue

from prometheus_client import (  # noqa: E402 (the value class must be chosen first)
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess  # noqa: E402

# Buckets fine around the targets: 10 ms acceptance, 50 ms payments, 100 ms delivery, 5 ms DB.
FAST = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1)
SLOW = (0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5)

EVENT_ACCEPTANCE = Histogram(
    "relay_event_acceptance_seconds", "EVENT received to OK sent, accepted events", buckets=FAST
)
PAYMENT_VERIFICATION = Histogram(
    "relay_payment_verification_seconds",
    "Pricing and claim verification of paid kinds",
    buckets=SLOW,
)
DELIVERY_LAG = Histogram(
    "relay_delivery_lag_seconds",
    "Commit on the accepting worker to match on this one",
    buckets=SLOW,
)
DB_QUERY = Histogram(
    "relay_db_query_seconds", "PostgreSQL round trips by operation", ["operation"], buckets=FAST
)
OK_ANSWERS = Counter("relay_ok_total", "OK answers by NIP-01 prefix", ["prefix"])
DISCONNECTS = Counter("relay_disconnects_total", "Closed connections by reason", ["reason"])
EVENTS_DELIVERED = Counter("relay_events_delivered_total", "Live events queued to subscribers")
CONNECTIONS = Gauge("relay_connections", "Open WebSocket connections", multiprocess_mode="livesum")
SUBSCRIPTIONS = Gauge("relay_subscriptions", "Active subscriptions", multiprocess_mode="livesum")
OUTBOX_FORWARDED = Counter("relay_outbox_forwarded_total", "Claims acknowledged by the node")
OUTBOX_DEAD_LETTERS = Counter(
    "relay_outbox_dead_letters_total",
    "Claims the node refused for good, moved to payment_outbox_dead",
)
DASSIE_FAILURES = Counter("relay_dassie_failures_total", "Calls that could not reach the node")
DASSIE_CALLS = Counter("relay_dassie_calls_total", "Dassie RPC calls by procedure", ["method"])
DASSIE_REJECTED = Counter(
    "relay_dassie_rejected_total", "Dassie calls failed fast because the breaker was open"
)
# One breaker per worker; livemax shows the instance's worst (any worker open reads 1).
DASSIE_BREAKER = Gauge(
    "relay_dassie_breaker_state",
    "Dassie circuit breaker: 0 closed, 0.5 half-open, 1 open",
    multiprocess_mode="livemax",
)
# Set by every GET /health (the readiness probe, the compose healthcheck): the last answer of
# any live worker wins, so it reads what the instance's latest health check saw.
DEPENDENCY_UP = Gauge(
    "relay_dependency_up",
    "PostgreSQL and Redis as the latest /health saw them: 1 up, 0 down",
    ["dependency"],
    multiprocess_mode="livemostrecent",
)
# With payments on, /health also reads the claim outbox (a table shared by every instance).
OUTBOX_BACKLOG = Gauge(
    "relay_outbox_backlog",
    "Accepted claims not yet acknowledged by the node, as the latest /health saw them",
    multiprocess_mode="livemostrecent",
)
OUTBOX_OLDEST = Gauge(
    "relay_outbox_oldest_seconds",
    "Age of the oldest unacknowledged claim (0: none), as the latest /health saw it",
    multiprocess_mode="livemostrecent",
)
CHANNEL_CACHE = Counter(
    "relay_channel_cache_total",
    "Channel-state lookups by level (l1 memory, l2 Redis, l3 node) and result: hit, miss,"
    " stale (l1 past its TTL, served while the node is unreachable)",
    ["level", "result"],
)

# Read replicas (cluster/store/replica_health.py): every worker measures them; livemax reads
# the worst view of any live worker of the instance.
REPLICA_LAG = Gauge(
    "relay_replica_lag_seconds",
    "How long WAL not yet replayed by the replica has existed on the primary (0: caught up)",
    ["replica"],
    multiprocess_mode="livemax",
)
REPLICA_USABLE = Gauge(
    "relay_replica_usable",
    "1 when the replica serves reads, 0 when it is skipped (unreachable or past the lag limit)",
    ["replica"],
    multiprocess_mode="livemin",
)
READ_TARGET = Counter(
    "relay_read_target_total",
    "REQ, COUNT and NIP-77 reads by the server that served them (primary or a replica)",
    ["target"],
)


def ok_prefix(message: str) -> str:
    """The label for an OK message: its NIP-01 prefix, or `accepted` for an empty message."""
    if not message:
        return "accepted"
    prefix = message.split(":", 1)[0]
    return prefix if len(prefix) <= 20 else "other"


def render() -> tuple[bytes, str]:
    if os.environ.get(MULTIPROC_ENV):
        flush_values()  # this worker's own figures are current; the others' within FLUSH_INTERVAL
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_worker_dead(pid: int) -> None:
    """gunicorn child_exit hook: drop a dead worker's live gauges from the aggregate."""
    if os.environ.get(MULTIPROC_ENV):
        _multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
