"""CPU time per accepted event, by process group, while the generator publishes.

Latency percentiles on a 2-core machine move a lot from run to run; CPU seconds per event
move much less, so before/after comparisons of a change to the write path use this:

    python -m loadtest.cpu_per_event --url ws://127.0.0.1:8080 --rate 1000 --duration 20

Processes are grouped by name and command line (relay workers, PostgreSQL, Redis, nginx, the
ledger); the generator itself runs as a child and is reported from its own measurement.
Loopback targets only, one bounded generator run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec
import psutil

from loadtest.results import PublishResult
from loadtest.stats import LatencySummary

GROUPS = (
    ("relay", ("cluster.cli serve", "relay-cluster serve")),
    ("ledger", ("cluster.cli ledger", "relay-cluster ledger")),
    ("postgres", ("postgres",)),
    ("redis", ("redis-server",)),
    ("nginx", ("nginx",)),
)


class CpuReport(msgspec.Struct, kw_only=True):
    """CPU seconds by process group over one publish run, per event and per wall second."""

    latency_ms: LatencySummary
    events: int
    wall_s: float
    cpu_s: dict[str, float]
    cpu_us_per_event: dict[str, float]
    cores: dict[str, float]


def group_of(name: str, cmdline: str) -> str | None:
    for group, needles in GROUPS:
        if any(needle in cmdline or needle in name for needle in needles):
            return group
    return None


def cluster_processes(cluster_dir: Path) -> list[psutil.Process]:
    """The `relay-cluster up` process of `cluster_dir` (its cluster.json) and every process
    under it: its PostgreSQL, Redis, ledger, instances and nginx, and nobody else's (tests on
    the same machine run PostgreSQL servers of their own, which would otherwise count)."""
    state = msgspec.json.decode((cluster_dir / "cluster.json").read_bytes())
    root = psutil.Process(int(state["pid"]))
    return [root, *root.children(recursive=True)]


def cpu_by_group(cluster_dir: Path | None = None) -> dict[str, dict[int, float]]:
    """CPU seconds (user + system) of every process we recognise, by group and pid; only the
    cluster's own processes when `cluster_dir` is given."""
    found: dict[str, dict[int, float]] = {}
    processes = psutil.process_iter() if cluster_dir is None else cluster_processes(cluster_dir)
    for process in processes:
        try:
            group = group_of(process.name(), " ".join(process.cmdline()))
            if group is not None:
                times = process.cpu_times()
                found.setdefault(group, {})[process.pid] = times.user + times.system
        except psutil.Error:
            continue
    return found


def spent(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]
) -> dict[str, float]:
    """CPU seconds used per group between two samples (processes born meanwhile count whole)."""
    return {
        group: round(sum(t - before.get(group, {}).get(pid, 0.0) for pid, t in pids.items()), 3)
        for group, pids in after.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="ws:// URL of the relay (loopback only)")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--cluster-dir",
        type=Path,
        help="data dir of the `relay-cluster up` under test: count only its processes",
    )
    args = parser.parse_args(argv)
    if not args.url.startswith(("ws://127.", "ws://[::1]", "ws://localhost")):
        parser.error("only loopback targets")
    command = [
        sys.executable, "-m", "loadtest.generator", "publish", "--url", args.url,
        "--rate", str(args.rate), "--duration", str(args.duration),
        "--connections", str(args.connections),
    ]  # fmt: skip
    before = cpu_by_group(args.cluster_dir)
    started = time.monotonic()
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=args.duration + 120, check=True
    )
    elapsed = time.monotonic() - started
    by_group = spent(before, cpu_by_group(args.cluster_dir))
    result = msgspec.json.decode(run.stdout, type=PublishResult)
    accepted = max(1, result.latency_ms.count)
    by_group["generator"] = result.generator.cpu_s
    report = CpuReport(
        latency_ms=result.latency_ms,
        events=accepted,
        wall_s=round(elapsed, 1),
        cpu_s=by_group,
        cpu_us_per_event={k: round(v / accepted * 1e6, 1) for k, v in by_group.items()},
        cores={k: round(v / elapsed, 3) for k, v in by_group.items()},
    )
    print(msgspec.json.format(msgspec.json.encode(report), indent=2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
