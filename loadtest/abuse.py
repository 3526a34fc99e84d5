"""The abuse suite: a legitimate client's figures with and without attackers beside it.

    python -m loadtest.abuse [--url ws://127.0.0.1:8080] [--duration 30] [--attackers 4]

Without --url it starts `relay-cluster up` (the default shape) with loopback NOT exempt from
the rate limits (every attacker address gets exactly the limits a stranger gets), stores
`--fill` events for the REQ attacks, then runs two phases of `--duration` seconds: the
legitimate client alone, then the same client while each attack shape (loadtest/attacks.py)
runs from its own loopback addresses (127.0.1.x). The legitimate client, on 127.0.2.1,
publishes `--rate` events/s on one connection, receives them on a second (delivery), and sends
a REQ every 0.5 s on a third. Reported per phase: its EVENT -> OK, REQ -> EOSE and delivery
percentiles, errors and lost deliveries, the relay workers' peak RSS and restarts, and what
the relay answered each attack. Loopback only; every loop ends with its phase.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import msgspec
import orjson
import psutil

from cluster.nostr.signing import Signer, event_frame
from cluster.services.shape import choose_shape
from loadtest.attacks import SHAPES, AttackStats, summarize
from loadtest.files import DEFAULT_PAID_KIND
from loadtest.fill import fill
from loadtest.launch import BenchCluster, free_port
from loadtest.loopback import require_loopback
from loadtest.progress import log
from loadtest.stats import LatencySummary
from loadtest.stats import summarize as latency_summary
from loadtest.targets import Target
from loadtest.watch import process_tree_rss

LEGIT_SOURCE = "127.0.2.1"
QUERY_EVERY = 0.5
DRAIN = 5.0
# Every address gets the same limits, sized so the legitimate client (100 ev/s, a REQ every
# 0.5 s) fits inside them; loopback is not exempt (and through nginx no forwarded address is).
# Each attacker uses everything these limits allow.
STRANGER_ENV = {
    "RELAY_RATE_LIMITS__EXEMPT": "[]",
    "RELAY_RATE_LIMITS__EVENTS_PER_MINUTE_PER_IP": "9000",
    "RELAY_RATE_LIMITS__EVENTS_PER_MINUTE_PER_PUBKEY": "9000",
    "RELAY_RATE_LIMITS__REQS_PER_MINUTE_PER_IP": "600",
    # Above the 150 events/s allowed plus REQs and CLOSEs: the legitimate client's 104/s fit.
    "RELAY_RATE_LIMITS__MESSAGES_PER_SECOND_PER_IP": "200",
}


class LegitResult(msgspec.Struct, kw_only=True):
    published: int
    accepted: int
    errors: dict[str, int]
    event_ok_s: LatencySummary
    req_eose_ms: LatencySummary
    delivery_ms: LatencySummary
    lost_deliveries: int


class PhaseResult(msgspec.Struct, kw_only=True):
    name: str
    duration_s: float
    legit: LegitResult
    worker_rss_mib_max: float
    worker_restarts: int
    attacks: dict[str, dict[str, int]] = {}


class AbuseResult(msgspec.Struct, kw_only=True):
    target: str
    attackers: int
    shapes: list[str]
    phases: list[PhaseResult]


async def legit_client(url: str, rate: float, duration: float, stop: asyncio.Event) -> LegitResult:
    """Publish at `rate`, receive what was published, query every QUERY_EVERY seconds."""
    signer = Signer()
    connector = aiohttp.TCPConnector(limit=0, local_addr=(LEGIT_SOURCE, 0))
    sent_at: dict[str, float] = {}
    ok_s: list[float] = []
    eose_s: list[float] = []
    delivered_s: dict[str, float] = {}
    errors: dict[str, int] = {}

    def error(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    async with aiohttp.ClientSession(connector=connector) as session:
        pub = await session.ws_connect(url)
        sub = await session.ws_connect(url)
        query = await session.ws_connect(url)
        await sub.send_str(
            orjson.dumps(["REQ", "mine", {"authors": [signer.pubkey], "limit": 0}]).decode()
        )

        async def read_oks() -> None:
            async for message in pub:
                answer = orjson.loads(message.data)
                if answer[0] == "OK" and answer[1] in sent_at:
                    if answer[2]:
                        ok_s.append(time.perf_counter() - sent_at[answer[1]])
                    else:
                        error(str(answer[3]).split(":", 1)[0])

        async def read_deliveries() -> None:
            async for message in sub:
                event = orjson.loads(message.data)
                if event[0] == "EVENT" and event[2]["id"] in sent_at:
                    delivered_s.setdefault(
                        event[2]["id"], time.perf_counter() - sent_at[event[2]["id"]]
                    )

        async def ask() -> None:
            n = 0
            while not stop.is_set() and not query.closed:
                n += 1
                started = time.perf_counter()
                await query.send_str(
                    orjson.dumps(["REQ", f"q{n}", {"kinds": [1], "limit": 20}]).decode()
                )
                async for message in query:
                    decoded = orjson.loads(message.data)
                    if decoded[0] in ("EOSE", "CLOSED") and decoded[1] == f"q{n}":
                        if decoded[0] == "EOSE":
                            eose_s.append(time.perf_counter() - started)
                        else:
                            error("req closed")
                        break
                if closed(query):  # the relay closed it under us
                    error("query socket closed")
                    return
                await query.send_str(orjson.dumps(["CLOSE", f"q{n}"]).decode())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), QUERY_EVERY)

        readers = [asyncio.create_task(read_oks()), asyncio.create_task(read_deliveries())]
        asker = asyncio.create_task(ask())
        start = time.perf_counter()
        total = int(rate * duration)
        for i in range(total):
            due = start + i / rate
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            event = signer.sign(1, f"legit {i}")
            sent_at[event.id] = time.perf_counter()
            await pub.send_str(event_frame(event))
        stop.set()
        deadline = time.perf_counter() + DRAIN
        while time.perf_counter() < deadline and (
            len(ok_s) + sum(errors.values()) < len(sent_at) or len(delivered_s) < len(ok_s)
        ):
            await asyncio.sleep(0.05)
        await asker
        for task in readers:
            task.cancel()
        for ws in (pub, sub, query):
            await ws.close()
    missing = len(sent_at) - len(ok_s) - sum(errors.values())
    if missing > 0:
        errors["no answer"] = missing
    return LegitResult(
        published=len(sent_at),
        accepted=len(ok_s),
        errors=errors,
        event_ok_s=latency_summary(ok_s),
        req_eose_ms=latency_summary(eose_s),
        delivery_ms=latency_summary(list(delivered_s.values())),
        lost_deliveries=max(0, len(ok_s) - len(delivered_s)),
    )


def closed(ws: aiohttp.ClientWebSocketResponse) -> bool:
    """A fresh look at the socket (not a narrowed earlier one)."""
    return ws.closed


def worker_pids(target: Target) -> set[int]:
    """The relay workers now (children of each instance's gunicorn master)."""
    found: set[int] = set()
    for name, pids in target.watch.items():
        if name.startswith("instance-"):
            for pid in pids:
                with contextlib.suppress(psutil.Error):
                    found.update(child.pid for child in psutil.Process(pid).children())
    return found


async def _attack_until(url: str, stats: list[AttackStats], seconds: float) -> list[AttackStats]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(SHAPES[s.shape](url, s.source, stop, s)) for s in stats]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait(tasks, timeout=15)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return stats


def attack_process(url: str, stats_json: bytes, seconds: float, out: str) -> None:
    """The attackers, in a process of their own: they must not slow the legitimate client's
    event loop (that would charge the relay for the generator's own delays)."""
    stats = msgspec.json.decode(stats_json, type=list[AttackStats])
    done = asyncio.run(_attack_until(url, stats, seconds))
    Path(out).write_bytes(msgspec.json.encode(done))


async def run_phase(
    name: str, target: Target, shapes: Sequence[str], attackers: int, rate: float, duration: float
) -> PhaseResult:
    log(f"phase {name}: {duration:g} s, shapes {', '.join(shapes) or 'none'}")
    stop = asyncio.Event()
    before = worker_pids(target)
    stats = [
        AttackStats(shape=shape, source=f"127.0.1.{index * len(shapes) + n + 1}")
        for index in range(attackers)
        for n, shape in enumerate(shapes)
    ]
    settle = 2.0 if stats else 0.0  # let the attackers take their positions
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        process = multiprocessing.get_context("spawn").Process(
            target=attack_process,
            args=(target.url, msgspec.json.encode(stats), settle + duration + DRAIN, out.name),
        )
        if stats:
            process.start()
        peak = 0.0

        async def sample() -> None:
            nonlocal peak
            instances = [
                pid for n, pids in target.watch.items() if n.startswith("instance-") for pid in pids
            ]
            while not stop.is_set():
                peak = max(peak, process_tree_rss(instances).rss_mib)
                await asyncio.sleep(1.0)

        sampler = asyncio.create_task(sample())
        await asyncio.sleep(settle)
        legit = await legit_client(target.url, rate, duration, stop)
        await sampler
        if stats:
            await asyncio.to_thread(process.join, settle + duration + DRAIN + 30)
            if process.exitcode == 0:
                stats = msgspec.json.decode(out.read(), type=list[AttackStats])
    after = worker_pids(target)
    return PhaseResult(
        name=name,
        duration_s=duration,
        legit=legit,
        worker_rss_mib_max=peak,
        worker_restarts=len(before - after),
        attacks={shape: dict(counter) for shape, counter in summarize(stats).items()},
    )


def render(result: AbuseResult) -> str:
    """The with/without table of docs/RELIABILITY.md."""

    def cell(s: LatencySummary) -> str:
        return "-" if s.p50 is None else f"{s.p50:.1f} / {s.p95:.1f} / {s.p99:.1f}"

    lines = [
        "| phase | EVENT → OK p50/p95/p99 ms | REQ → EOSE | delivery | errors | lost "
        "| worker RSS peak MiB | restarts |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for phase in result.phases:
        legit = phase.legit
        lines.append(
            f"| {phase.name} | {cell(legit.event_ok_s)} | {cell(legit.req_eose_ms)} | "
            f"{cell(legit.delivery_ms)} | {sum(legit.errors.values())} | {legit.lost_deliveries} | "
            f"{phase.worker_rss_mib_max:.0f} | {phase.worker_restarts} |"
        )
    return "\n".join(lines)


async def run(target: Target, args: argparse.Namespace) -> AbuseResult:
    shapes = [s for s in args.shapes.split(",") if s]
    phases = [await run_phase("without attack", target, [], 0, args.rate, args.duration)]
    phases.append(
        await run_phase("with attack", target, shapes, args.attackers, args.rate, args.duration)
    )
    return AbuseResult(target=target.url, attackers=args.attackers, shapes=shapes, phases=phases)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running relay (loopback); default: start a cluster")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--attackers", type=int, default=4, help="addresses per shape")
    parser.add_argument("--rate", type=float, default=100.0, help="legit events/s")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--fill", type=int, default=20_000, help="stored events (own cluster)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    unknown = set(filter(None, args.shapes.split(","))) - set(SHAPES)
    if unknown:
        parser.error(f"unknown shapes {sorted(unknown)}; known: {', '.join(SHAPES)}")
    cluster = None
    with tempfile.TemporaryDirectory(prefix="relay-abuse-") as work:
        if args.url:
            require_loopback(args.url)
            target = Target(url=args.url)
        else:
            shape = choose_shape(None, None)
            cluster = BenchCluster(Path(work), shape.instances, shape.workers, free_port(),
                                   DEFAULT_PAID_KIND, env=STRANGER_ENV)  # fmt: skip
            target = cluster.start()
        try:
            if cluster is not None and target.database_url and args.fill:
                fill(target.database_url, args.fill, Path(work) / "fill-manifest.json")
            result = asyncio.run(run(target, args))
        finally:
            if cluster is not None:
                cluster.stop()
    encoded = msgspec.json.format(msgspec.json.encode(result), indent=2)
    if args.json_out:
        args.json_out.write_bytes(encoded + b"\n")
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
