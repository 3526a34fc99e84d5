"""Latency summaries, answer rates and the generator's own CPU share (pure, but the meter)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import msgspec


class LatencySummary(msgspec.Struct, kw_only=True):
    """Nearest-rank percentiles in milliseconds; every figure is None when nothing was timed."""

    count: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None
    mean: float | None = None


def summarize(samples: Sequence[float]) -> LatencySummary:
    """Latency summary in milliseconds from samples in seconds (nearest-rank percentiles)."""
    if not samples:
        return LatencySummary()
    ordered = sorted(samples)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[min(n - 1, max(0, math.ceil(q * n) - 1))] * 1000

    return LatencySummary(
        count=n,
        p50=round(rank(0.50), 3),
        p95=round(rank(0.95), 3),
        p99=round(rank(0.99), 3),
        max=round(ordered[-1] * 1000, 3),
        mean=round(sum(ordered) / n * 1000, 3),
    )


def answer_rate(times: Sequence[float], offered: float) -> float:
    """Answers per second, from when the middle 98% of answers arrived (capped at `offered`).

    A steady latency shifts those times but keeps their spread; a relay that falls behind
    stretches it, so the rate drops below the offered one. The 1% cut at each end keeps one
    late straggler from counting as a throughput loss (it shows in p99/max instead).
    """
    n = len(times)
    if n < 2:
        return float(n)
    ordered = sorted(times)
    lo, hi = int(n * 0.01), max(int(n * 0.01) + 1, math.ceil(n * 0.99) - 1)
    hi = min(hi, n - 1)
    answers = hi - lo
    span = ordered[hi] - ordered[lo]
    if span <= 0:
        return offered
    return min(offered, answers / span)


class GeneratorCpu(msgspec.Struct):
    """The generator's CPU over a phase: a share near 1 means the generator was the limit."""

    cpu_s: float
    wall_s: float
    core_share: float


class CpuMeter:
    """Process CPU seconds over a wall-clock window: the generator's own load."""

    def __init__(self) -> None:
        self.cpu0 = time.process_time()
        self.wall0 = time.monotonic()

    def result(self) -> GeneratorCpu:
        cpu = time.process_time() - self.cpu0
        wall = max(1e-9, time.monotonic() - self.wall0)
        return GeneratorCpu(round(cpu, 2), round(wall, 2), round(cpu / wall, 3))
