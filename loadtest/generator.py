"""A lean asyncio open-loop load generator for the relay (uvloop + aiohttp WebSockets).

    .venv/bin/python -m loadtest.generator publish --url ws://127.0.0.1:8080 --rate 1000
    .venv/bin/python -m loadtest.generator sweep    --url ... --rates 500,1000,2000 --duration 15
    .venv/bin/python -m loadtest.generator delivery --url ... --subscribers 1000 --rate 200
    .venv/bin/python -m loadtest.generator query    --url ... --manifest fill.json --rate 200
    .venv/bin/python -m loadtest.generator hold     --url ... --connections 10000 --subs 10 \
        --live-rate 200 --live-subscribers 100

Every subcommand prints one JSON document (or writes it to --json-out): latency percentiles
(p50/p95/p99/max/mean in milliseconds), offered and achieved rates, errors by kind, and the
generator's own CPU use, so a reader can tell whether the generator or the relay was the limit.

How it stays out of the way (one core is enough for 5,000 events/s):
- every event is signed before the clock starts (loadtest.presign; a process pool for big
  batches) and kept as the exact text frame to send;
- open loop (loadtest.schedule): event i is due at start + i/rate whatever the relay does, and
  its latency is taken from that scheduled time (no coordinated omission);
- one reader task per connection matches answers by event id (loadtest.trackers).

Connections are spread over `--sources` loopback source addresses (loadtest.loopback) because
nginx hashes the client address. Bounded by construction: each scenario has a fixed event/query
count and a deadline (duration + drain), and targets must be loopback addresses.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

from loadtest.errors import LoadTestError
from loadtest.files import read_channels, read_manifest
from loadtest.filters import QUERY_SHAPES, make_filter
from loadtest.loopback import require_loopback
from loadtest.presign import FREE_KIND
from loadtest.results import AnyResult
from loadtest.runtime import raise_nofile_limit, run_async
from loadtest.scenarios.delivery import run_delivery
from loadtest.scenarios.hold import run_hold
from loadtest.scenarios.publish import run_publish
from loadtest.scenarios.query import run_query
from loadtest.scenarios.sweep import run_sweep

__all__ = [
    "QUERY_SHAPES",
    "LoadTestError",
    "main",
    "make_filter",
    "require_loopback",
    "run_delivery",
    "run_hold",
    "run_publish",
    "run_query",
    "run_sweep",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loadtest.generator", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--url", required=True, help="ws:// URL of the relay (loopback only)")
        sub.add_argument("--sources", type=int, default=32, help="loopback source addresses")
        sub.add_argument("--json-out", help="write the result here instead of stdout")

    publish = commands.add_parser("publish", help="EVENT → OK at a constant offered rate")
    common(publish)
    publish.add_argument("--rate", type=float, default=1000)
    publish.add_argument("--duration", type=float, default=60)
    publish.add_argument("--connections", type=int, default=50)
    publish.add_argument("--kind", type=int, default=FREE_KIND)
    publish.add_argument("--content-bytes", type=int, default=64)
    publish.add_argument("--drain", type=float, default=10)
    publish.add_argument("--channels", help="JSON file of paid channels (publishes paid events)")

    sweep = commands.add_parser("sweep", help="publish at several rates in turn")
    common(sweep)
    sweep.add_argument("--rates", default="500,1000,2000,3000,5000")
    sweep.add_argument("--duration", type=float, default=15)
    sweep.add_argument("--connections", type=int, default=50)
    sweep.add_argument("--kind", type=int, default=FREE_KIND)
    sweep.add_argument("--pause", type=float, default=2.0, help="seconds between steps")

    delivery = commands.add_parser("delivery", help="publish → subscriber receives")
    common(delivery)
    delivery.add_argument("--rate", type=float, default=200)
    delivery.add_argument("--duration", type=float, default=30)
    delivery.add_argument("--subscribers", type=int, default=1000)
    delivery.add_argument("--fanout", type=int, default=10, help="subscribers per event")
    delivery.add_argument("--publishers", type=int, default=10)

    query = commands.add_parser("query", help="REQ → EOSE for common filter shapes")
    common(query)
    query.add_argument("--rate", type=float, default=200)
    query.add_argument("--duration", type=float, default=20)
    query.add_argument("--connections", type=int, default=20)
    query.add_argument("--manifest", help="fill manifest JSON (authors, ids, tags to ask for)")
    query.add_argument("--shapes", default=",".join(QUERY_SHAPES))
    query.add_argument("--seed", type=int, default=1, help="picks the filters' values")

    hold = commands.add_parser("hold", help="hold N connections with K subscriptions each")
    common(hold)
    hold.set_defaults(sources=64)
    hold.add_argument("--connections", type=int, default=10_000)
    hold.add_argument("--subs", type=int, default=10)
    hold.add_argument("--hold", type=float, default=10)
    hold.add_argument("--concurrency", type=int, default=200, help="handshakes at once")
    hold.add_argument("--watch", action="append", default=[], help="name=pid[,pid]: RSS of trees")
    hold.add_argument("--health", action="append", default=[], help="instance URL for /health")
    hold.add_argument("--live-rate", type=float, default=0)
    hold.add_argument("--live-duration", type=float, default=30)
    hold.add_argument("--live-subscribers", type=int, default=100)
    hold.add_argument("--live-fanout", type=int, default=10)
    return parser


def parse_watch(values: Sequence[str]) -> dict[str, list[int]]:
    """`name=pid[,pid]` options → {name: pids} (one name may be given several times)."""
    watch: dict[str, list[int]] = {}
    for value in values:
        name, _, pids = value.partition("=")
        watch.setdefault(name, []).extend(int(p) for p in pids.split(",") if p)
    return watch


def log(line: str) -> None:
    print(f"# {line}", file=sys.stderr, flush=True)


async def run_command(args: argparse.Namespace) -> AnyResult:
    """The scenario the subcommand names, with its options."""
    if args.command == "publish":
        channels = read_channels(args.channels) if args.channels else None
        payments = channels.channels if channels else []
        return await run_publish(
            args.url,
            rate=args.rate,
            duration=args.duration,
            connections=min(args.connections, len(payments)) if payments else args.connections,
            kind=channels.kind if channels else args.kind,
            content_bytes=args.content_bytes,
            sources=args.sources,
            drain=args.drain,
            payments=payments,
            price=channels.price if channels else 0,
        )
    if args.command == "sweep":
        return await run_sweep(
            args.url,
            rates=[float(r) for r in args.rates.split(",") if r],
            duration=args.duration,
            connections=args.connections,
            kind=args.kind,
            sources=args.sources,
            pause=args.pause,
            log=log,
        )
    if args.command == "delivery":
        return await run_delivery(
            args.url,
            rate=args.rate,
            duration=args.duration,
            subscribers=args.subscribers,
            fanout=args.fanout,
            publishers=args.publishers,
            sources=args.sources,
        )
    if args.command == "query":
        return await run_query(
            args.url,
            rate=args.rate,
            duration=args.duration,
            connections=args.connections,
            manifest=read_manifest(args.manifest) if args.manifest else None,
            shapes=[s for s in args.shapes.split(",") if s],
            sources=args.sources,
            seed=args.seed,
        )
    return await run_hold(
        args.url,
        connections=args.connections,
        subs=args.subs,
        hold=args.hold,
        sources=args.sources,
        concurrency=args.concurrency,
        watch=parse_watch(args.watch),
        health_urls=args.health,
        live_rate=args.live_rate,
        live_duration=args.live_duration,
        live_subscribers=args.live_subscribers,
        live_fanout=args.live_fanout,
        log=log,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    raise_nofile_limit()
    try:
        result = run_async(run_command(args))
    except LoadTestError as exc:
        print(f"loadtest.generator: {exc}", file=sys.stderr)
        return 2
    text = msgspec.json.format(msgspec.json.encode(result), indent=2)
    if args.json_out:
        Path(args.json_out).write_bytes(text + b"\n")
    else:
        sys.stdout.buffer.write(text + b"\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
