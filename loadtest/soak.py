"""Soak: constant load for many minutes, one generator window at a time, watching latency and
the relay's memory for drift. `python -m loadtest.soak --cluster-dir .data --minutes 10`.

The windows are loadtest/sustained.py's (the bench's `soak` scenario runs the same); this
command writes them as a markdown table (docs/SOAK.md by default).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec
import psutil

from loadtest.sustained import rss_of_trees, soak, soak_lines, table_row
from loadtest.targets import ClusterState

DOC = Path(__file__).resolve().parents[1] / "docs" / "SOAK.md"


def cluster_state(cluster_dir: Path) -> ClusterState:
    return msgspec.json.decode((cluster_dir / "cluster.json").read_bytes(), type=ClusterState)


def instance_pids(cluster_dir: Path) -> list[int]:
    """The relay instances' gunicorn masters (their workers are their children)."""
    return [
        service.pid
        for service in cluster_state(cluster_dir).services
        if service.name.startswith("instance-") and service.pid
    ]


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
    started = time.time()
    result = soak(
        url, args.rate, args.minutes, args.window, cluster_dir,
        rss_of_trees(instance_pids(cluster_dir)),
        on_window=lambda window: print(table_row(window), flush=True),
    )  # fmt: skip
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
    lines = [
        "# Soak",
        "",
        f"`python -m loadtest.soak --cluster-dir {args.cluster_dir} --minutes {args.minutes}"
        f" --rate {args.rate:g}` against `relay-cluster up` (its nginx URL), on"
        f" {platform.node()} ({psutil.cpu_count()} cores), {stamp}."
        " Free kind-1 events, open loop, 50 connections; every window is a fresh generator run.",
        "",
        *soak_lines(result),
    ]
    Path(args.output).write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
