"""How figures read in the report's tables: milliseconds, percentile triples, verdicts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from loadtest.explain import ExplainShape
from loadtest.results import PublishResult


class Percentiles(Protocol):
    """Any latency summary: the generator's, the relay's histograms', one query shape's."""

    @property
    def count(self) -> int: ...
    @property
    def p50(self) -> float | None: ...
    @property
    def p95(self) -> float | None: ...
    @property
    def p99(self) -> float | None: ...


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def triple(summary: Percentiles | None) -> str:
    if summary is None or not summary.count:
        return "-"
    return f"{ms(summary.p50)} / {ms(summary.p95)} / {ms(summary.p99)}"


def mib(value: float | None) -> str:
    """A signed MiB delta (`+21.9`, `-0.5`), or `-` when unknown."""
    return f"{value:+.1f}" if value is not None else "-"


def explained(e: ExplainShape | None) -> str:
    if e is None:
        return "-"
    return f"{ms(e.execution_ms_median)} / {e.rows_removed_max:,}"


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("**pass**" if ok else "**FAIL**")


def errors(counts: dict[str, int] | None) -> str:
    """The three most frequent errors, or `0`."""
    if not counts:
        return "0"
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:3])


def sustainable(steps: Sequence[PublishResult], p95_limit: float | None) -> float | None:
    """The highest offered rate kept up with (and with p95 under the limit, when given)."""
    best: float | None = None
    for step in steps:
        p95 = step.latency_ms.p95
        if step.kept_up and (p95_limit is None or (p95 is not None and p95 < p95_limit)):
            best = max(best or 0, step.offered_rate)
    return best
