"""Soak: constant load for many minutes, one generator window at a time, watching latency and
the relay's memory for drift. `python -m loadtest.soak --cluster-dir .data --minutes 10`.

Each window is a separate open-loop `loadtest.generator publish` run against the cluster's nginx
URL (events pre-signed per window, so a window starts about a second after the previous one
ends); after each window the RSS of every relay instance (gunicorn master and workers) is summed.
Writes a markdown table (docs/SOAK.md by default).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec
import psutil

from loadtest.results import PublishResult
from loadtest.targets import ClusterState

DOC = Path(__file__).resolve().parents[1] / "docs" / "SOAK.md"


def cluster_state(cluster_dir: Path) -> ClusterState:
    return msgspec.json.decode((cluster_dir / "cluster.json").read_bytes(), type=ClusterState)


def relay_rss_mib(cluster_dir: Path) -> float:
    total = 0
    for service in cluster_state(cluster_dir).services:
        if service.name.startswith("instance-") and service.pid:
            master = psutil.Process(service.pid)
            for process in [master, *master.children(recursive=True)]:
                total += process.memory_info().rss
    return total / 2**20


def run_window(url: str, rate: float, seconds: float, out: Path) -> PublishResult:
    command = [
        sys.executable, "-m", "loadtest.generator", "publish", "--url", url,
        "--rate", str(rate), "--duration", str(seconds), "--connections", "50",
        "--json-out", str(out),
    ]  # fmt: skip
    subprocess.run(command, check=True, timeout=seconds + 120, capture_output=True)
    return msgspec.json.decode(out.read_bytes(), type=PublishResult)


def summary(p95s: list[float], rss: list[float], errors: int, window: float) -> str:
    """Drift and growth in one line: what a soak is for."""
    half = len(rss) // 2
    growth = (rss[-1] - rss[half]) / max(1, len(rss) - 1 - half) * 60 / window if half else 0.0
    return (
        f"Summary: {errors} errors; EVENT → OK p95 {p95s[0]:.1f} ms in the first window,"
        f" {p95s[-1]:.1f} ms in the last, {max(p95s):.1f} ms at worst; relay RSS"
        f" {rss[0]:.0f} → {rss[-1]:.0f} MiB ({growth:+.1f} MiB a minute over the second half)."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cluster-dir", default=".data", help="data dir of a running `up`")
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--window", type=float, default=60.0, help="seconds per window")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--output", default=str(DOC))
    args = parser.parse_args(argv)
    cluster_dir = Path(args.cluster_dir)
    url = cluster_state(cluster_dir).url or ""
    if not url.startswith(("ws://127.", "ws://[::1]", "ws://localhost")):
        parser.error("soak only targets loopback")
    windows = max(1, int(args.minutes * 60 // args.window))
    rows = []
    p95s: list[float] = []
    rss: list[float] = []
    errors = 0
    start_rss = relay_rss_mib(cluster_dir)
    started = time.time()
    for index in range(windows):
        result = run_window(url, args.rate, args.window, cluster_dir / f"soak-{index}.json")
        latency = result.latency_ms
        p50, p95, p99 = latency.p50 or 0.0, latency.p95 or 0.0, latency.p99 or 0.0
        p95s.append(p95)
        rss.append(relay_rss_mib(cluster_dir))
        errors += result.error_count
        rows.append(
            f"| {index + 1} | {result.achieved_rate} | {p50:.1f} / {p95:.1f} / {p99:.1f} | "
            f"{result.error_count} | {rss[-1]:.0f} |"
        )
        print(rows[-1], flush=True)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
    lines = [
        "# Soak",
        "",
        f"`python -m loadtest.soak --cluster-dir {args.cluster_dir} --minutes {args.minutes}"
        f" --rate {args.rate:g}` against `relay-cluster up` (its nginx URL), on"
        f" {platform.node()} ({psutil.cpu_count()} cores), {stamp}."
        " Free kind-1 events, open loop, 50 connections; every window is a fresh generator run.",
        "",
        f"Relay RSS (all instances, masters + workers) before the soak: {start_rss:.0f} MiB.",
        "",
        "| window | achieved ev/s | EVENT → OK p50 / p95 / p99 (ms) | errors"
        " | relay RSS after (MiB) |",
        "|---:|---:|---|---:|---:|",
        *rows,
        "",
        summary(p95s, rss, errors, args.window),
        "",
    ]
    Path(args.output).write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
