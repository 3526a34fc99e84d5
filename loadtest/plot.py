"""docs/performance-latency.png: sweep latency percentiles and achieved rate against offered."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from loadtest.record import BenchResults


def plot_sweep(results: BenchResults, path: Path) -> bool:
    steps = results.sweep.steps if results.sweep else []
    if not steps:
        return False
    offered = [s.offered_rate for s in steps]
    # A bare Figure renders with Agg and touches no pyplot state (no display, no backend).
    fig = Figure(figsize=(8, 7))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.4]})
    for key, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-")):
        top.plot(offered, [getattr(s.latency_ms, key) for s in steps], style, label=key)
    top.axhline(10, color="red", linestyle="--", linewidth=1, label="target p95 < 10 ms")
    top.set_yscale("log")
    top.set_ylabel("EVENT → OK latency (ms, log)")
    top.set_title("Event acceptance (free kind) against offered rate")
    top.grid(True, which="both", alpha=0.3)
    top.legend()
    bottom.plot(offered, offered, "k--", linewidth=1, label="offered")
    bottom.plot(offered, [s.achieved_rate for s in steps], "o-", label="achieved")
    bottom.set_xlabel("offered rate (events/s)")
    bottom.set_ylabel("events/s")
    bottom.grid(True, alpha=0.3)
    bottom.legend()
    fig.text(
        0.01, 0.005,
        f"{results.cluster_short}; asyncio generator on the same machine",
        fontsize=8, color="gray",
    )  # fmt: skip
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return True
