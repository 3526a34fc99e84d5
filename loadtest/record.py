"""Everything one bench run measured: the raw results file, and what the report reads.

Fields are in the order the phases run (the report's machine-load table follows it); a phase
that did not run is left out of the JSON (omit_defaults), as it always was.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from loadtest.abuse import AbuseResult
from loadtest.bench_features import FeaturesResult
from loadtest.bench_matching import MatchingRow
from loadtest.explain import ExplainShape
from loadtest.files import FillManifest
from loadtest.fill import Prewarm
from loadtest.locust_run import LocustResult
from loadtest.machine import MachineInfo
from loadtest.pyspy import ProfileSummary
from loadtest.results import (
    DeliveryResult,
    HoldResult,
    PublishResult,
    QueryResult,
    ScenarioResult,
    SweepResult,
)
from loadtest.shapes import ShapesResult
from loadtest.sustained import SoakResult


class BenchResults(msgspec.Struct, kw_only=True, omit_defaults=True):
    notes: list[str] = []
    cluster: str = ""
    cluster_short: str = ""
    machine_info: MachineInfo | None = None
    fill: FillManifest | None = None
    prewarm: Prewarm | None = None
    query_warmup: QueryResult | None = None
    query: QueryResult | None = None
    query_load: QueryResult | None = None
    explain: dict[str, ExplainShape] | None = None
    connections: HoldResult | None = None
    connections_direct: HoldResult | None = None
    subscriptions: HoldResult | None = None
    warmup: PublishResult | None = None
    accept: PublishResult | None = None
    sustained: PublishResult | None = None
    peak: PublishResult | None = None
    soak: SoakResult | None = None
    paid: PublishResult | None = None
    delivery: DeliveryResult | None = None
    broadcast: DeliveryResult | None = None
    sweep: SweepResult | None = None
    locust: LocustResult | None = None
    explain_after: dict[str, ExplainShape] | None = None
    events_after: int | None = None
    profile: ProfileSummary | None = None
    profile_rate: float | None = None
    matching: list[MatchingRow] | None = None
    shapes: ShapesResult | None = None
    abuse: AbuseResult | None = None
    features: FeaturesResult | None = None
    elapsed_s: float = 0.0
    command: str = ""
    finished_at: str = ""
    failed: str | None = None

    def phases(self) -> list[tuple[str, ScenarioResult]]:
        """(name, result) of every scenario that ran, in the order they ran."""
        out = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, ScenarioResult):
                out.append((name, value))
        return out


def read_results(path: str | Path) -> BenchResults:
    return msgspec.json.decode(Path(path).read_bytes(), type=BenchResults)


def write_results(path: Path, results: BenchResults) -> None:
    encoded = msgspec.json.encode(results)
    path.write_bytes(msgspec.json.format(encoded, indent=1) + b"\n")
