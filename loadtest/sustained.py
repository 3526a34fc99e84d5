"""Load held for minutes: one open-loop generator window after another, with the relay's
memory sampled after each, so drift (latency creeping up, memory growing) shows.

Used by the bench's `soak` scenario and by `python -m loadtest.soak`. A window is one
`loadtest.generator publish` run (events pre-signed per window, so the next window starts about
a second after the previous one ends); `rss` sums the relay instances' process trees.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec
import psutil

from loadtest.results import PublishResult, ScenarioResult
from loadtest.runs import run_generator

RSS_GROWTH_LIMIT_MIB_PER_MIN = 2.0
""""Flat memory": relay RSS (all instances) grows by less than this per minute over the second
half of a soak. The first half is left out: pools, caches and prepared statements fill then."""


class SoakWindow(msgspec.Struct, frozen=True):
    index: int
    result: PublishResult
    relay_rss_mib: float | None


class SoakResult(ScenarioResult, kw_only=True):
    offered_rate: float
    window_s: float
    start_rss_mib: float | None
    windows: list[SoakWindow]

    @property
    def p95s(self) -> list[float]:
        return [w.result.latency_ms.p95 or 0.0 for w in self.windows]

    @property
    def error_count(self) -> int:
        return sum(w.result.error_count for w in self.windows)

    @property
    def kept_up(self) -> bool:
        return bool(self.windows) and all(w.result.kept_up for w in self.windows)

    @property
    def rss_growth_mib_per_min(self) -> float | None:
        """Relay RSS growth per minute over the second half of the windows (None: unmeasured)."""
        rss = [w.relay_rss_mib for w in self.windows]
        half = len(rss) // 2
        first, last = rss[half] if half else None, rss[-1] if rss else None
        if first is None or last is None or len(rss) - 1 - half <= 0:
            return None
        return (last - first) / (len(rss) - 1 - half) * 60 / self.window_s


def rss_of_trees(pids: list[int]) -> Callable[[], float | None]:
    """RSS in MiB of each pid and all its descendants, summed (None once one is gone, and
    always None without pids: a relay given by URL only has no process tree to read)."""

    def measure() -> float | None:
        if not pids:
            return None
        total = 0
        try:
            for pid in pids:
                root = psutil.Process(pid)
                for process in [root, *root.children(recursive=True)]:
                    total += process.memory_info().rss
        except psutil.Error:
            return None
        return total / 2**20

    return measure


def soak(
    url: str,
    rate: float,
    minutes: float,
    window: float,
    work: Path,
    rss: Callable[[], float | None],
    *,
    connections: int = 50,
    on_window: Callable[[SoakWindow], None] = lambda _: None,
) -> SoakResult:
    """`minutes` of `rate` ev/s in windows of `window` seconds (at least one)."""
    count = max(1, int(minutes * 60 // window))
    start = rss()
    windows: list[SoakWindow] = []
    for index in range(count):
        args = ["publish", "--url", url, "--rate", str(rate), "--duration", str(window),
                "--connections", str(connections)]  # fmt: skip
        result = run_generator(args, work, f"soak-{index}", window * 2 + 180, PublishResult)
        windows.append(SoakWindow(index + 1, result, rss()))
        on_window(windows[-1])
    return SoakResult(
        scenario="soak", offered_rate=rate, window_s=window, start_rss_mib=start, windows=windows
    )


TABLE_HEAD = [
    "| window | achieved ev/s | EVENT → OK p50 / p95 / p99 (ms) | errors | relay RSS after (MiB) |",
    "|---:|---:|---|---:|---:|",
]


def table_row(window: SoakWindow) -> str:
    r = window.result
    latency = r.latency_ms
    return (
        f"| {window.index} | {r.achieved_rate} | {latency.p50 or 0:.1f} / {latency.p95 or 0:.1f}"
        f" / {latency.p99 or 0:.1f} | {r.error_count} | {window.relay_rss_mib or 0:.0f} |"
    )


def summary(result: SoakResult) -> str:
    """Drift and growth in one line: what a soak is for."""
    p95s = result.p95s
    rss = [w.relay_rss_mib or 0.0 for w in result.windows]
    growth = result.rss_growth_mib_per_min or 0.0
    return (
        f"Summary: {result.error_count} errors; EVENT → OK p95 {p95s[0]:.1f} ms in the first"
        f" window, {p95s[-1]:.1f} ms in the last, {max(p95s):.1f} ms at worst; relay RSS"
        f" {rss[0]:.0f} → {rss[-1]:.0f} MiB ({growth:+.1f} MiB a minute over the second half)."
    )


def soak_lines(result: SoakResult) -> list[str]:
    """The per-window table and its summary, as markdown lines."""
    return [
        f"Relay RSS (all instances, masters + workers) before the soak:"
        f" {result.start_rss_mib or 0:.0f} MiB.",
        "",
        *TABLE_HEAD,
        *(table_row(window) for window in result.windows),
        "",
        summary(result),
        "",
    ]


def soak_section(result: SoakResult | None) -> list[str]:
    """docs/PERFORMANCE.md's soak section (nothing when the soak did not run)."""
    if result is None or not result.windows:
        return []
    return [
        "## Soak (free kind, EVENT → OK, windows back to back)",
        "",
        f"{result.offered_rate:g} ev/s in windows of {result.window_s:g} s (loadtest/sustained.py;"
        " every window a fresh open-loop generator run over the bench's connections).",
        "",
        *soak_lines(result),
    ]
