"""What each generator scenario reports: the JSON document `loadtest.generator` writes.

Field names are the ones the bench, the soak and the tests read. The bench adds what it
measured around a run (`machine`, the relay's own histograms) to the same Struct.
"""

from __future__ import annotations

import msgspec

from loadtest.filters import FilterJson
from loadtest.histograms import HistogramSummary
from loadtest.stats import GeneratorCpu, LatencySummary


class MachineLoad(msgspec.Struct):
    """Cores busy during a phase: the whole machine, and processes that are not the bench's."""

    other_cores: float
    machine_busy_cores: float
    wall_s: float


class ScenarioResult(msgspec.Struct, kw_only=True):
    scenario: str
    machine: MachineLoad | None = None
    """Set by the bench: how busy the machine was while the scenario ran."""


class Warmup(msgspec.Struct, kw_only=True):
    """What the unmeasured warm-up before the clock itself measured."""

    events: int = 0
    latency_ms: LatencySummary = msgspec.field(default_factory=LatencySummary)
    errors: dict[str, int] = {}


class PublishResult(ScenarioResult, kw_only=True):
    """EVENT → OK at a constant offered rate."""

    kind: int
    paid: bool
    offered_rate: float
    duration_s: float
    connections: int
    offered: int
    sent: int
    accepted: int
    duplicates: int
    achieved_rate: float
    last_answer_after_s: float | None
    latency_ms: LatencySummary
    send_lag_ms: LatencySummary
    errors: dict[str, int]
    error_count: int
    presign_s: float
    warmup: Warmup | None
    generator: GeneratorCpu
    relay_histogram: HistogramSummary | None = None
    """Set by the bench: the relay's own histogram of the same run (acceptance or payment)."""

    @property
    def kept_up(self) -> bool:
        """Achieved at least 99% of the offered rate without a single error."""
        return self.achieved_rate >= 0.99 * self.offered_rate and not self.error_count


class DeliveryResult(ScenarioResult, kw_only=True):
    """Publish → subscriber receives, each event addressed to `fanout` subscribers."""

    offered_rate: float
    duration_s: float
    subscribers: int
    fanout: int
    publishers: int
    sent: int
    accepted: int
    expected_deliveries: int
    delivered: int
    delivery_rate: float
    latency_ms: LatencySummary
    publish_latency_ms: LatencySummary
    send_lag_ms: LatencySummary
    errors: dict[str, int]
    error_count: int
    presign_s: float
    generator: GeneratorCpu
    relay_delivery_lag: HistogramSummary | None = None
    """Set by the bench: the relay's `relay_delivery_lag_seconds` over the run."""


class ShapeResult(LatencySummary, kw_only=True):
    """REQ → EOSE of one filter shape, and how many events those queries returned."""

    events: int = 0
    filter_example: FilterJson = {}


class QueryResult(ScenarioResult, kw_only=True):
    """REQ → EOSE at a constant offered rate, round-robin over filter shapes."""

    offered_rate: float
    duration_s: float
    connections: int
    queries: int
    answered: int
    achieved_rate: float
    latency_ms: LatencySummary
    by_shape: dict[str, ShapeResult]
    errors: dict[str, int]
    error_count: int
    generator: GeneratorCpu
    relay_db_query: dict[str, HistogramSummary] | None = None
    """Set by the bench: `relay_db_query_seconds` by label set over the run."""


class TreeRss(msgspec.Struct, kw_only=True):
    """RSS of a process and all its descendants."""

    rss_mib: float
    processes: int | None = None


class HealthSnapshot(msgspec.Struct, kw_only=True):
    """One instance's /health (one worker's view), or why it could not be read."""

    url: str = ""
    status: str | None = None
    connections: int | None = None
    subscriptions: int | None = None
    pid: int | None = None
    error: str | None = None


class HoldMemory(msgspec.Struct, kw_only=True):
    """RSS by watched process tree (and `generator`) at each phase of a hold."""

    baseline: dict[str, TreeRss] = {}
    connected: dict[str, TreeRss] = {}
    connected_health: list[HealthSnapshot] = []
    subscribed: dict[str, TreeRss] = {}
    subscribed_health: list[HealthSnapshot] = []
    end: dict[str, TreeRss] = {}


class RssPer1000(msgspec.Struct, kw_only=True):
    """Memory growth per 1,000 held connections (and per 1,000 subscriptions), MiB."""

    relay_connections_mib: float
    relay_subscriptions_mib: float
    nginx_mib: float
    relay_per_1000_subscriptions_mib: float


class HoldResult(ScenarioResult, kw_only=True):
    """Many held sockets with subscriptions, optionally live delivery measured meanwhile."""

    connections: int
    opened: int
    connect_failures: dict[str, int]
    connect_s: float
    connect_ms: LatencySummary
    subs_per_connection: int
    subscriptions: int
    subscribe_s: float
    req_eose_ms: LatencySummary
    refused: dict[str, int]
    alive_at_end: int
    unexpected_events: int
    hold_s: float
    memory: HoldMemory
    live: DeliveryResult | None
    live_failure: str | None = None
    """Why the live delivery run could not go ahead (e.g. no room for more connections)."""
    generator: GeneratorCpu
    errors: dict[str, int]
    error_count: int
    rss_per_1000: RssPer1000 | None = None
    """Set by the bench from `memory`."""


class SweepResult(ScenarioResult, kw_only=True):
    """Publish at each rate in turn (stopped early after overloaded steps)."""

    duration_s: float
    steps: list[PublishResult]


AnyResult = PublishResult | DeliveryResult | QueryResult | HoldResult | SweepResult
