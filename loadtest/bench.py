"""`python -m loadtest.bench`: the performance bench behind docs/PERFORMANCE.md.

    .venv/bin/python -m loadtest.bench              # full run (~15 min): own cluster, 1M events
    .venv/bin/python -m loadtest.bench --quick      # smoke run: tiny fill, seconds per scenario
    .venv/bin/python -m loadtest.bench --url ws://127.0.0.1:8080 --cluster-dir .data
                                                    # against a running `relay-cluster up`

Steps: start `relay-cluster up` (embedded PostgreSQL, Redis, ledger, K instances x N workers,
nginx) in a temporary data dir (loadtest.launch), or use --url; fill N real signed events
straight into PostgreSQL (loadtest.fill); open paid channels on the ledger; run the scenarios
of the issue with the asyncio generator, one subprocess per scenario (loadtest.phases); EXPLAIN
(ANALYZE) the REQ filter shapes; a short locust run for comparison; scrape the relays' /metrics
histograms before and after each scenario; sample RSS of the relay processes while 10,000
connections are held; then write docs/PERFORMANCE.md and docs/performance-latency.png
(loadtest.report, loadtest.plot).

Everything targets loopback addresses, every phase is bounded in count and time, and the
cluster the bench started is stopped on exit (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec

from cluster.services.shape import choose_shape, usable_cores
from loadtest import bench_counts, bench_services
from loadtest.abuse import AbuseResult
from loadtest.bench_features import FeaturesPlan, run_features
from loadtest.errors import LoadTestError
from loadtest.files import DEFAULT_PAID_KIND
from loadtest.launch import PAID_PRICE, BenchCluster, free_port, rate_limit_overrides
from loadtest.loopback import require_loopback
from loadtest.machine import machine_info
from loadtest.phases import run_scenarios
from loadtest.plan import SCENARIOS, Plan
from loadtest.plot import plot_sweep
from loadtest.progress import log
from loadtest.record import BenchResults, read_results, write_results
from loadtest.report import render_markdown
from loadtest.report_rows import results_rows
from loadtest.runtime import raise_nofile_limit
from loadtest.shapes import measure_shapes, parse_shapes
from loadtest.targets import Target, target_from_cluster_dir

__all__ = ["main", "rate_limit_overrides"]

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "PERFORMANCE.md"
PLOT = REPO / "docs" / "performance-latency.png"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="tiny fill, seconds per scenario")
    parser.add_argument("--url", help="use this running relay instead of starting a cluster")
    parser.add_argument("--cluster-dir", help="data dir of the running `relay-cluster up`")
    parser.add_argument("--database-url", help="PostgreSQL of the relay at --url (fill, EXPLAIN)")
    parser.add_argument("--ledger-url", help="ledger RPC URL for paid channels (with --url)")
    parser.add_argument("--ledger-token", default=os.environ.get("DASSIE_RPC_TOKEN"))
    parser.add_argument("--paid-kind", type=int, help="priced kind of the relay at --url")
    parser.add_argument("--paid-price", type=int, default=PAID_PRICE)
    parser.add_argument("--metrics-url", action="append", default=[], help="instance URL(s)")
    parser.add_argument("--instances", type=int, help="default: what `up` chooses (the cores)")
    parser.add_argument("--workers", type=int, help="per instance; default: what `up` chooses")
    parser.add_argument("--port", type=int, default=0, help="nginx port (default: a free one)")
    parser.add_argument("--data-dir", help="cluster data dir to create or reuse (default: temp)")
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary data dir")
    parser.add_argument("--fill", type=int, help="stored events (default 1,000,000; quick 2,000)")
    parser.add_argument("--accept-duration", type=float, help="seconds of the 1,000 ev/s run")
    parser.add_argument("--sweep", help="comma-separated offered rates")
    parser.add_argument("--sweep-duration", type=float)
    parser.add_argument("--connections", type=int, help="held connections (default 10,000)")
    parser.add_argument("--sub-connections", type=int, help="connections holding subscriptions")
    parser.add_argument("--subs-per-connection", type=int, help="default 20 (x 5,000 = 100k)")
    parser.add_argument("--skip", default="", help=f"comma-separated of {','.join(SCENARIOS)}")
    parser.add_argument("--output", default=str(DOC), help="markdown report")
    parser.add_argument("--plot", default=str(PLOT), help="PNG of the rate sweep")
    parser.add_argument("--results-json", help="raw results (default: <data dir>/results.json)")
    parser.add_argument("--note", action="append", default=[], help="extra note for the report")
    parser.add_argument(
        "--from-results", help="only re-render the report and plot from a raw results file"
    )
    features = parser.add_mutually_exclusive_group()
    features.add_argument(
        "--skip-features",
        action="store_true",
        help="leave out the sync, search, counts and import section",
    )
    features.add_argument("--only-features", action="store_true",
                          help="only that section (no cluster); mind --output")  # fmt: skip
    return parser


def plan_from(args: argparse.Namespace) -> Plan:
    plan = Plan.quick() if args.quick else Plan()
    if args.fill is not None:
        plan.fill = args.fill
    if args.accept_duration:
        plan.accept_duration = args.accept_duration
    if args.sweep:
        plan.sweep_rates = [float(r) for r in args.sweep.split(",") if r]
    if args.sweep_duration:
        plan.sweep_duration = args.sweep_duration
    if args.connections is not None:
        plan.hold_connections = args.connections
    if args.sub_connections is not None:
        plan.sub_connections = args.sub_connections
    if args.subs_per_connection is not None:
        plan.subs_per_connection = args.subs_per_connection
    return plan


def existing_target(args: argparse.Namespace) -> Target:
    """The relay at --url, with what the options (or its cluster dir) say about it."""
    require_loopback(args.url)
    if args.cluster_dir:
        target = target_from_cluster_dir(Path(args.cluster_dir), args.url)
    else:
        target = Target(url=args.url, instance_urls=[args.url])
    target.database_url = args.database_url or target.database_url
    target.ledger_url = args.ledger_url or target.ledger_url
    target.ledger_token = args.ledger_token or target.ledger_token
    target.paid_kind = args.paid_kind
    target.paid_price = args.paid_price
    return target


def write_outputs(args: argparse.Namespace, results: BenchResults, results_path: Path) -> None:
    machine = results.machine_info
    if machine is None:
        return
    write_results(results_path, results)
    log(f"raw results: {results_path}")
    if plot_sweep(results, Path(args.plot)):
        log(f"plot: {args.plot}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(render_markdown(results, machine, results.command))
    log(f"report: {args.output}")
    for row in results_rows(results):
        log(" | ".join(row))


def rerender(args: argparse.Namespace) -> int:
    saved = read_results(args.from_results)
    if saved.machine_info is None:
        print(f"{args.from_results} has no machine_info: not a bench results file", file=sys.stderr)
        return 2
    plot_sweep(saved, Path(args.plot))
    command = saved.command or "python -m loadtest.bench"
    Path(args.output).write_text(render_markdown(saved, saved.machine_info, command))
    log(f"report: {args.output} (from {args.from_results})")
    return 0


def run_abuse(plan: Plan, work: Path) -> AbuseResult | None:
    """The abuse suite on a cluster of its own (its limits on), in its own process."""
    out = work / "abuse.json"
    command = [
        sys.executable, "-m", "loadtest.abuse",
        "--duration", str(plan.abuse_duration),
        "--attackers", str(plan.abuse_attackers),
        "--fill", str(plan.abuse_fill),
        "--json-out", str(out),
    ]  # fmt: skip
    timeout = 4 * plan.abuse_duration + 300
    try:
        subprocess.run(command, check=True, timeout=timeout, stdout=subprocess.DEVNULL)
        return msgspec.json.decode(out.read_bytes(), type=AbuseResult)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        log(f"abuse suite failed: {exc}")
        return None


def only_features(args: argparse.Namespace, command: str) -> int:
    """`--only-features`: the sync, search, counts and import section alone, written as a
    report of its own to --output (loadtest.bench_features; no cluster is started)."""
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="relay-bench-features-"))
    results = BenchResults(notes=list(args.note), cluster="none (--only-features)")
    try:
        target = Target(url="ws://127.0.0.1", database_url=bench_counts.SERVER,
                        redis_url=bench_services.REDIS)  # fmt: skip
        results.machine_info = machine_info(target)
        results.features = run_features(work / "features", features_plan(args))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results.elapsed_s = round(time.monotonic() - started, 1)
    results.command = command
    results.finished_at = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    default = Path(tempfile.gettempdir()) / f"relay-bench-features-{stamp}.json"
    write_outputs(args, results, Path(args.results_json) if args.results_json else default)
    return 1 if results.features.failures else 0


def features_plan(args: argparse.Namespace) -> FeaturesPlan:
    return FeaturesPlan.quick() if args.quick else FeaturesPlan()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.from_results:
        return rerender(args)
    given = list(sys.argv[1:] if argv is None else argv)
    command = "python -m loadtest.bench" + (" " + shlex.join(given) if given else "")
    if args.only_features:
        return only_features(args, command)
    plan = plan_from(args)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(SCENARIOS)
    if unknown:
        print(f"unknown scenarios in --skip: {sorted(unknown)}", file=sys.stderr)
        return 2
    soft, hard = raise_nofile_limit()
    log(f"RLIMIT_NOFILE soft={soft} hard={hard}")
    results = BenchResults(notes=list(args.note))
    needed = plan.hold_connections + 2000
    if "connections" not in skip and soft < needed:
        results.notes.append(
            f"RLIMIT_NOFILE is {soft}; {plan.hold_connections:,} connections need about "
            f"{needed:,} descriptors in the generator, so the hold scenario may fail early."
        )
    started = time.monotonic()
    temp_dir: Path | None = None
    cluster: BenchCluster | None = None
    if args.url:
        work = Path(tempfile.mkdtemp(prefix="relay-bench-"))
        temp_dir = None if args.keep_data else work
    elif args.data_dir:
        work = Path(args.data_dir).absolute()
    else:
        work = Path(tempfile.mkdtemp(prefix="relay-bench-"))
        temp_dir = None if args.keep_data else work
    try:
        if args.url:
            target = existing_target(args)
            results.cluster = f"existing relay at {args.url}"
            results.cluster_short = f"relay at {args.url}"
        else:
            port = args.port or free_port()
            shape = choose_shape(args.instances, args.workers)  # `up`'s own default
            cluster = BenchCluster(work, shape.instances, shape.workers, port, DEFAULT_PAID_KIND)
            target = cluster.start()
            results.cluster_short = f"relay-cluster up: {shape} + nginx"
            results.cluster = (
                f"`relay-cluster up` ({shape}, chosen from {usable_cores()} cores"
                f"{'' if args.instances is None and args.workers is None else ', overridden'}; "
                f"embedded PostgreSQL, Redis, ledger, nginx; paid kind "
                f"{target.paid_kind} at {target.paid_price} sats)"
            )
        metrics_urls = args.metrics_url or target.instance_urls or [target.url]
        require_loopback(target.url)
        log(f"target {target.url}; instances {metrics_urls}; work dir {work}")
        results.machine_info = machine_info(target)
        run_scenarios(target, plan, skip, work, metrics_urls, results)
    except (LoadTestError, subprocess.TimeoutExpired, OSError) as exc:
        log(f"bench failed: {exc}")
        results.notes.append(f"The bench stopped early: {exc}")
        results.failed = str(exc)
    finally:
        if cluster is not None:
            cluster.stop()
    if "shapes" not in skip and not args.url and results.failed is None:
        # Last, on clusters of their own, once the bench's cluster has stopped.
        log("shapes: which instances x workers serves best here (the default's figures)")
        results.shapes = measure_shapes(
            parse_shapes(",".join(plan.shapes)), plan.shape_rates, plan.shape_duration, work
        )
    if "abuse" not in skip and not args.url and results.failed is None:
        log("abuse: a legitimate client with and without attackers beside it (loadtest.abuse)")
        results.abuse = run_abuse(plan, work)
    if not args.skip_features and results.failed is None:
        # After every cluster has stopped: these measurements want the machine to themselves.
        log("features: negentropy, COUNT and search, import (loadtest.bench_features)")
        results.features = run_features(work / "features", features_plan(args))
    results.elapsed_s = round(time.monotonic() - started, 1)
    results.command = command
    results.finished_at = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    if args.results_json:
        results_path = Path(args.results_json)
    elif temp_dir is None:
        results_path = work / "results.json"
    else:  # the work dir is removed below: keep the raw results next to it
        stamp = time.strftime("%Y%m%d-%H%M%S")
        results_path = Path(tempfile.gettempdir()) / f"relay-bench-results-{stamp}.json"
    write_outputs(args, results, results_path)
    if temp_dir is not None:
        shutil.rmtree(temp_dir, ignore_errors=True)
    log(f"done in {results.elapsed_s / 60:.1f} min")
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
