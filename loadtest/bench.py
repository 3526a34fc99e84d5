"""`python -m loadtest.bench`: the performance bench behind docs/PERFORMANCE.md.

    .venv/bin/python -m loadtest.bench              # full run (~15 min): own cluster, 1M events
    .venv/bin/python -m loadtest.bench --quick      # smoke run: tiny fill, seconds per scenario
    .venv/bin/python -m loadtest.bench --url ws://127.0.0.1:8080 --cluster-dir .data
                                                    # against a running `relay-cluster up`

Steps: start `relay-cluster up` (embedded PostgreSQL, Redis, ledger, K instances x N workers,
nginx) in a temporary data dir, or use --url; fill N real signed events straight into
PostgreSQL (COPY with exactly the columns relay_save_event writes, computed by the relay's own
`save_parameters`); open paid channels on the ledger; run the scenarios of the issue with the
asyncio generator (loadtest/generator.py, one subprocess per scenario); EXPLAIN (ANALYZE) the
REQ filter shapes; a short locust run for comparison; scrape the relays' /metrics histograms
before and after each scenario; sample RSS of the relay processes while 10,000 connections are
held; then write docs/PERFORMANCE.md and docs/performance-latency.png.

Everything targets loopback addresses, every phase is bounded in count and time, and the
cluster the bench started is stopped on exit (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import datetime as dt
import json
import math
import os
import platform
import random
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from loadtest.generator import (
    DEFAULT_PAID_KIND,
    HASHTAGS,
    QUERY_SHAPES,
    FastSigner,
    LoadTestError,
    http_url,
    make_filter,
    raise_nofile_limit,
    require_loopback,
    secret_for,
    signed_event,
)

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "PERFORMANCE.md"
PLOT = REPO / "docs" / "performance-latency.png"
FILL_COLUMNS = "id, pubkey, created_at, kind, address, expires_at, tagvalues, raw"
FILL_CHUNK = 20_000
FILL_AUTHORS = 2_000
FILL_SPAN = 30 * 24 * 3600
PAID_PRICE = 10
CHANNEL_CAPACITY = 10**12


# -- configuration ------------------------------------------------------------------------------


@dataclass
class Plan:
    """Sizes and durations of one bench run (full or --quick)."""

    fill: int = 1_000_000
    accept_rate: float = 1000
    accept_duration: float = 60
    accept_connections: int = 50
    paid_rate: float = 500
    paid_duration: float = 30
    paid_connections: int = 50
    delivery_rate: float = 200
    delivery_duration: float = 30
    delivery_subscribers: int = 1000
    delivery_fanout: int = 10
    broadcast_rate: float = 10
    broadcast_duration: float = 15
    query_rate: float = 10
    query_duration: float = 30
    query_connections: int = 10
    query_load_rate: float = 50
    query_load_duration: float = 20
    channels_per_connection: int = 10
    hold_connections: int = 10_000
    hold_subs: int = 1
    hold_seconds: float = 10
    sub_connections: int = 5_000
    subs_per_connection: int = 20
    live_rate: float = 200
    live_duration: float = 30
    live_subscribers: int = 100
    live_fanout: int = 10
    sweep_rates: list[float] = field(
        default_factory=lambda: [100, 250, 500, 750, 1000, 1500, 2000, 3000, 5000]
    )
    sweep_duration: float = 10
    sweep_pause: float = 2.0
    warmup_seconds: float = 5.0
    locust_seconds: float = 20
    locust_free_users: int = 20
    locust_free_rate: float = 25
    locust_paid_users: int = 5
    locust_paid_rate: float = 10
    locust_query_users: int = 5
    locust_query_rate: float = 10
    profile_seconds: float = 20
    drain: float = 10

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            fill=2_000,
            accept_rate=100,
            accept_duration=2,
            accept_connections=4,
            paid_rate=50,
            paid_duration=1.5,
            paid_connections=4,
            delivery_rate=50,
            delivery_duration=1.5,
            delivery_subscribers=20,
            delivery_fanout=5,
            broadcast_rate=5,
            broadcast_duration=2,
            query_rate=20,
            query_duration=1.5,
            query_connections=4,
            query_load_rate=40,
            query_load_duration=1,
            channels_per_connection=2,
            hold_connections=50,
            hold_subs=1,
            hold_seconds=1,
            sub_connections=20,
            subs_per_connection=3,
            live_rate=20,
            live_duration=1.5,
            live_subscribers=10,
            live_fanout=5,
            sweep_rates=[50, 100],
            sweep_duration=1,
            sweep_pause=0.2,
            warmup_seconds=0.5,
            locust_seconds=4,
            locust_free_users=2,
            locust_free_rate=5,
            locust_paid_users=1,
            locust_paid_rate=5,
            locust_query_users=1,
            locust_query_rate=5,
            profile_seconds=0,
            drain=5,
        )


SCENARIOS = (
    "fill",
    "accept",
    "paid",
    "delivery",
    "broadcast",
    "query",
    "explain",
    "connections",
    "subscriptions",
    "sweep",
    "locust",
    "profile",
    "matching",
)


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[bench {stamp}] {message}", flush=True)


# -- the cluster ----------------------------------------------------------------------------------


@dataclass
class Target:
    """What the bench talks to: the public URL plus whatever it knows of the cluster behind."""

    url: str
    instance_urls: list[str] = field(default_factory=list)
    database_url: str | None = None
    ledger_url: str | None = None
    ledger_token: str | None = None
    watch: dict[str, list[int]] = field(default_factory=dict)
    redis_url: str | None = None
    paid_kind: int | None = None
    paid_price: int = 0
    data_dir: Path | None = None


class LocalCluster:
    """`relay-cluster up` as a subprocess in its own session; stopped with SIGTERM."""

    def __init__(
        self, data_dir: Path, instances: int, workers: int, port: int, paid_kind: int
    ) -> None:
        self.data_dir = data_dir
        self.instances = instances
        self.workers = workers
        self.port = port
        self.paid_kind = paid_kind
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "up.log"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "cluster.cli",
            "up",
            "--instances",
            str(self.instances),
            "--workers",
            str(self.workers),
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir / "cluster"),
        ]

    def start(self, timeout: float = 240) -> Target:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("RELAY_", "DASSIE_", "PROMETHEUS_"))
            and key not in ("DATABASE_URL", "REDIS_URL", "LEDGER_DATABASE_URL")
        }
        env["RELAY_PRICING"] = f"{self.paid_kind}:{PAID_PRICE}"
        env.update(rate_limit_overrides())
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log(f"starting: {shlex.join(self.command())}")
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                self.command(),
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        state_path = self.data_dir / "cluster" / "cluster.json"
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise LoadTestError(f"relay-cluster up exited:\n{self.tail()}")
            with contextlib.suppress(OSError, ValueError):
                state = json.loads(state_path.read_text())
                if state.get("ready"):
                    break
            if time.monotonic() > deadline:
                raise LoadTestError(f"cluster not ready within {timeout:g}s:\n{self.tail()}")
            time.sleep(0.5)
        target = target_from_cluster_dir(self.data_dir / "cluster", state.get("url"))
        target.paid_kind = self.paid_kind
        target.paid_price = PAID_PRICE
        return target

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 90) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        log("stopping the cluster")
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log("cluster did not stop in time; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def rate_limit_overrides() -> dict[str, str]:
    """Environment that switches the relay's per-IP/per-pubkey rate limits off (0 = off).

    The bench measures capacity, not policy: a few loopback addresses sending thousands of
    events per second would otherwise be throttled. Only settings that exist in this version
    of cluster.config are set (unknown keys are refused by the settings schema).
    """
    import msgspec

    from cluster.config import Settings

    env: dict[str, str] = {}
    for section in msgspec.structs.fields(Settings):
        if "rate" not in section.name or not isinstance(section.type, type):
            continue
        with contextlib.suppress(TypeError):
            for item in msgspec.structs.fields(section.type):
                if re.search(r"per_(minute|second|hour)|^connections_per_ip$", item.name):
                    env[f"RELAY_{section.name.upper()}__{item.name.upper()}"] = "0"
    return env


def target_from_cluster_dir(cluster_dir: Path, url: str | None = None) -> Target:
    """Read cluster.json (+ ledger.token) of a running `relay-cluster up`."""
    state = json.loads((cluster_dir / "cluster.json").read_text())
    services = {row["name"]: row for row in state.get("services", [])}
    target = Target(url=url or state.get("url") or "")
    target.instance_urls = [
        row["url"] for name, row in services.items() if name.startswith("instance-")
    ]
    target.watch = {
        name: [row["pid"]]
        for name, row in services.items()
        if row.get("pid") and (name.startswith("instance-") or name == "nginx")
    }
    postgres = services.get("postgres", {}).get("url", "")
    if "***" not in postgres:
        target.database_url = postgres or None
    target.redis_url = services.get("redis", {}).get("url")
    target.ledger_url = services.get("ledger", {}).get("url")
    token_path = cluster_dir / "ledger.token"
    if token_path.exists():
        target.ledger_token = token_path.read_text().strip()
    target.data_dir = cluster_dir
    return target


# -- filling PostgreSQL ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FillChunk:
    database_url: str
    seed: str
    start: int
    count: int
    total: int
    now: int
    authors: int


def _fill_chunk(chunk: FillChunk) -> dict[str, Any]:
    """Sign `count` realistic events and COPY them in; returns samples for the manifest."""
    import hashlib

    import psycopg

    from cluster.nostr.event import encode_event
    from cluster.store.events import SaveRequest, save_parameters

    rng = random.Random(f"{chunk.seed}-{chunk.start}")
    signers = [FastSigner(secret_for(f"fill-{chunk.seed}", a)) for a in range(chunk.authors)]
    pubkeys = [signer.pubkey for signer in signers]
    roots: deque[str] = deque(maxlen=64)
    sample_ids: list[str] = []
    e_targets: Counter[str] = Counter()
    p_targets: Counter[str] = Counter()
    kinds: Counter[int] = Counter()
    t_min, t_max = 2**62, 0
    special = 2 * chunk.authors if chunk.start == 0 else 0  # kind 0 and 3 per author
    words = ["gm", "nostr", "relay", "bitcoin", "zap", "hello", "world", "note", "pleb", "art"]

    def author() -> int:
        return int(chunk.authors * rng.random() ** 2)

    with psycopg.connect(chunk.database_url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY events ({FILL_COLUMNS}) FROM STDIN") as copy:
            for offset in range(chunk.count):
                i = chunk.start + offset
                base = chunk.now - FILL_SPAN + int(FILL_SPAN * i / chunk.total)
                created_at = min(chunk.now, base + rng.randint(0, 30))
                tags: list[list[str]] = []
                if offset < special:
                    a = offset // 2
                    kind = 0 if offset % 2 == 0 else 3
                    if kind == 3:
                        tags = [["p", pubkeys[author()]] for _ in range(rng.randint(5, 40))]
                    content = f'{{"name":"author {a}"}}' if kind == 0 else ""
                else:
                    a = author()
                    roll = rng.random()
                    if roll < 0.62:
                        kind = 1
                        if roots and rng.random() < 0.4:
                            root = roots[int(len(roots) * (1 - rng.random() ** 2)) - 1]
                            tags.append(["e", root, "", "root"])
                        if rng.random() < 0.3:
                            tags.append(["p", pubkeys[author()]])
                        if rng.random() < 0.2:
                            tags.append(["t", HASHTAGS[int(len(HASHTAGS) * rng.random() ** 2)]])
                        content = " ".join(rng.choice(words) for _ in range(rng.randint(3, 30)))
                    elif roll < 0.87:
                        kind = 7
                        target = roots[-1 - int(len(roots) * rng.random() ** 3)] if roots else ""
                        tags = [["e", target or hashlib.sha256(b"%d" % i).hexdigest()]]
                        tags.append(["p", pubkeys[author()]])
                        content = rng.choice(["+", "🤙", "❤️", "⚡"])
                    elif roll < 0.97:
                        kind = 6
                        target = roots[-1 - int(len(roots) * rng.random() ** 3)] if roots else ""
                        tags = [["e", target or hashlib.sha256(b"%d" % i).hexdigest(), ""]]
                        tags.append(["p", pubkeys[author()]])
                        content = ""
                    else:
                        kind = 30023
                        tags = [["d", f"article-{i}"], ["title", f"Article {i}"]]
                        tags.append(["t", HASHTAGS[int(len(HASHTAGS) * rng.random() ** 2)]])
                        content = "long form " * rng.randint(10, 100)
                content = f"{content} #{chunk.seed}-{i}" if kind not in (0, 3) else content
                event = signed_event(
                    signers[a], created_at, kind, tags, content, check=offset % 1000 == 0
                )
                event_id = event.id
                params = save_parameters(SaveRequest(event, encode_event(event).decode()))
                copy.write_row(params[:8])
                kinds[kind] += 1
                t_min, t_max = min(t_min, created_at), max(t_max, created_at)
                if kind == 1 and not any(tag[0] == "e" for tag in tags) and rng.random() < 0.02:
                    roots.append(event_id)
                for tag in tags:
                    if tag[0] == "e":
                        e_targets[tag[1]] += 1
                    elif tag[0] == "p":
                        p_targets[tag[1]] += 1
                if offset % 997 == 0:
                    sample_ids.append(event_id)
        conn.commit()
    return {
        "count": chunk.count,
        "ids": sample_ids,
        "e_targets": e_targets.most_common(200),
        "p_targets": p_targets.most_common(200),
        "kinds": dict(kinds),
        "time_min": t_min,
        "time_max": t_max,
    }


def prewarm(database_url: str) -> dict[str, Any]:
    """Load the event tables and their indexes into PostgreSQL's buffer cache (pg_prewarm).

    A bulk COPY goes through a small ring buffer, so right after the fill the buffer cache is
    nearly empty and every first read of a page costs a read from the OS (5-10 ms for a cold
    follow-feed query here, 0.6 ms warm). A relay that has served reads for a while has its
    working set cached; the query phases measure that steady state. Reported in the notes.
    """
    import psycopg

    started = time.monotonic()
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            # The events heap first, then every index, so that if the cache is smaller than
            # all of it, the indexes (read at random by every query) are what stays. The
            # event_tags heap is left out: tag queries read only its index.
            # (The index list comes from the catalog, so it follows the migrations.)
            rows = conn.execute(
                "SELECT r::text, pg_prewarm(r) FROM (SELECT 'events'::regclass AS r, 0 AS o"
                " UNION ALL SELECT indexrelid::regclass, 1 FROM pg_index"
                " WHERE indrelid IN ('events'::regclass, 'event_tags'::regclass)) AS rels"
                " ORDER BY o, r::text"
            ).fetchall()
    except psycopg.Error as exc:
        return {"error": str(exc).strip()}
    return {
        "relations": [str(row[0]) for row in rows if row],
        "blocks": sum(int(row[1]) for row in rows if row),
        "seconds": round(time.monotonic() - started, 1),
    }


def count_events(database_url: str) -> int:
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
    return int(row[0]) if row else 0


def fill(database_url: str, total: int, manifest_path: Path) -> dict[str, Any]:
    """COPY signed events until `total` are stored, VACUUM ANALYZE, write the manifest.

    A data dir filled by an earlier run (same manifest, enough events) is reused as it is.
    """
    existing = count_events(database_url)
    if existing >= total and manifest_path.exists():
        log(f"fill: {existing:,} events already stored; reusing {manifest_path}")
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        manifest["reused"] = True
        manifest["stored"] = existing
        return manifest
    seed = f"bench-{os.urandom(3).hex()}"
    # Someone else's events may be there already (--url): add ours, at least enough to know
    # values worth asking for.
    total_to_add = max(total - existing, min(total, 1000))
    started = time.monotonic()
    now = int(time.time())
    total = total_to_add
    chunks = [
        FillChunk(database_url, seed, start, min(FILL_CHUNK, total - start), total, now,
                  min(FILL_AUTHORS, max(1, total // 50)))
        for start in range(0, total, FILL_CHUNK)
    ]  # fmt: skip
    processes = max(1, min(2, os.cpu_count() or 1, len(chunks)))
    log(f"fill: {total:,} events in {len(chunks)} chunks over {processes} processes")
    results = []
    if processes == 1:
        results = [_fill_chunk(chunk) for chunk in chunks]
    else:
        with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
            for done, result in enumerate(pool.map(_fill_chunk, chunks), start=1):
                results.append(result)
                if done % 10 == 0 or done == len(chunks):
                    rate = sum(r["count"] for r in results) / (time.monotonic() - started)
                    log(f"fill: {done}/{len(chunks)} chunks ({rate:,.0f} events/s)")
    copy_s = time.monotonic() - started
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) events, event_tags")
        size = conn.execute(
            "SELECT pg_size_pretty(pg_total_relation_size('events')"
            " + pg_total_relation_size('event_tags'))"
        ).fetchone()
    elapsed = time.monotonic() - started
    authors_n = chunks[0].authors
    e_targets: Counter[str] = Counter()
    p_targets: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for result in results:
        e_targets.update(dict(result["e_targets"]))
        p_targets.update(dict(result["p_targets"]))
        kinds.update({str(k): v for k, v in result["kinds"].items()})
    manifest = {
        "count": existing + total,
        "added": total,
        "stored": existing + total,
        "seed": seed,
        "authors": [
            FastSigner(secret_for(f"fill-{seed}", a)).pubkey for a in range(min(authors_n, 500))
        ],
        "event_ids": [i for result in results for i in result["ids"]][:5000],
        "e_targets": [value for value, _ in e_targets.most_common(500)],
        "p_targets": [value for value, _ in p_targets.most_common(500)],
        "hashtags": HASHTAGS,
        "kinds": dict(kinds),
        "time_min": min(r["time_min"] for r in results),
        "time_max": max(r["time_max"] for r in results),
        "copy_s": round(copy_s, 1),
        "fill_s": round(elapsed, 1),
        "rate": round(total / copy_s),
        "table_size": size[0] if size else "?",
        "reused": False,
    }
    manifest_path.write_text(json.dumps(manifest) + "\n")
    log(
        f"fill: done in {elapsed:.0f}s ({total / copy_s:,.0f} events/s), "
        f"table {manifest['table_size']}"
    )
    return manifest


# -- payment channels ------------------------------------------------------------------------------


def open_channels(target: Target, count: int, path: Path) -> dict[str, Any]:
    """Open `count` channels (one per paid connection: nonces must rise per channel)."""
    from cluster.payments.claims import sender_pubkey_of
    from cluster.payments.dassie import DassieClient

    if not (target.ledger_url and target.ledger_token):
        raise LoadTestError("no ledger URL/token: cannot open payment channels")
    run = os.urandom(4).hex()
    secrets_ = [secret_for(f"payer-{run}", i) for i in range(count)]

    async def go() -> list[dict[str, str]]:
        assert target.ledger_url and target.ledger_token
        async with DassieClient(target.ledger_url, target.ledger_token, timeout=10) as node:
            channels = []
            for secret in secrets_:
                state = await node.open_channel(sender_pubkey_of(secret), CHANNEL_CAPACITY, "BTC")
                channels.append(
                    {"channel_id": state.channel_id, "secret": secret, "currency": "BTC"}
                )
            return channels

    channels = asyncio.run(go())
    data = {"kind": target.paid_kind, "price": target.paid_price, "channels": channels}
    path.write_text(json.dumps(data, indent=1) + "\n")
    path.chmod(0o600)
    return data


# -- /metrics --------------------------------------------------------------------------------------


def scrape(urls: Sequence[str]) -> dict[tuple[str, str], dict[float, float]]:
    """Cumulative histogram buckets summed over instances: {(name, labels): {le: count}}."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, str], dict[float, float]] = {}
    for url in urls:
        try:
            with urllib.request.urlopen(f"{http_url(url)}/metrics", timeout=10) as response:
                text = response.read().decode()
        except OSError as exc:
            log(f"metrics: {url}: {exc}")
            continue
        for family in text_string_to_metric_families(text):
            if family.type != "histogram":
                continue
            for sample in family.samples:
                if not sample.name.endswith("_bucket"):
                    continue
                labels = dict(sample.labels)
                le = float(labels.pop("le"))
                key = (family.name, ",".join(f"{k}={v}" for k, v in sorted(labels.items())))
                buckets = out.setdefault(key, {})
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return out


def histogram_delta(
    before: dict[tuple[str, str], dict[float, float]],
    after: dict[tuple[str, str], dict[float, float]],
    name: str,
    labels: str = "",
) -> dict[float, float]:
    now = after.get((name, labels), {})
    then = before.get((name, labels), {})
    return {le: count - then.get(le, 0.0) for le, count in now.items()}


def histogram_quantile(buckets: dict[float, float], q: float) -> float | None:
    """Prometheus' histogram_quantile (linear within the bucket), in milliseconds."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower, lower_count = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                return round(lower * 1000, 3)
            span = count - lower_count
            fraction = (rank - lower_count) / span if span else 1.0
            return round((lower + (le - lower) * fraction) * 1000, 3)
        lower, lower_count = le, count
    return None


def histogram_summary(buckets: dict[float, float]) -> dict[str, Any]:
    count = max(buckets.values()) if buckets else 0
    return {
        "count": int(count),
        "p50": histogram_quantile(buckets, 0.50),
        "p95": histogram_quantile(buckets, 0.95),
        "p99": histogram_quantile(buckets, 0.99),
    }


# -- CPU accounting: how busy was the machine with things that are not this bench? -----------------


class OtherLoad:
    """CPU seconds used by processes outside the bench's own process tree during a phase."""

    def __init__(self) -> None:
        import psutil

        self.psutil = psutil
        self.ours = os.getpid()
        self.start = self._snapshot()
        self.t0 = time.monotonic()
        self.epoch0 = time.time()
        self.system0 = psutil.cpu_times()

    def _ours(self) -> set[int]:
        with contextlib.suppress(self.psutil.Error):
            me = self.psutil.Process(self.ours)
            return {self.ours, *(p.pid for p in me.children(recursive=True))}
        return {self.ours}

    def _snapshot(self) -> dict[int, tuple[float, float]]:
        ours = self._ours()
        snap = {}
        for proc in self.psutil.process_iter(["pid", "create_time", "cpu_times"]):
            info = proc.info
            if info["pid"] in ours or info["cpu_times"] is None:
                continue
            times = info["cpu_times"]
            snap[info["pid"]] = (info["create_time"], times.user + times.system)
        return snap

    def result(self) -> dict[str, float]:
        end = self._snapshot()
        wall = max(1e-9, time.monotonic() - self.t0)
        other = 0.0
        for pid, (created, cpu) in end.items():
            before = self.start.get(pid)
            if before and before[0] == created:
                other += cpu - before[1]
            elif created >= self.epoch0:
                other += cpu  # started during the phase
        system1 = self.psutil.cpu_times()
        busy = sum(
            getattr(system1, k) - getattr(self.system0, k)
            for k in ("user", "system", "nice", "irq", "softirq", "steal")
            if hasattr(system1, k)
        )
        return {
            "other_cores": round(other / wall, 2),
            "machine_busy_cores": round(busy / wall, 2),
            "wall_s": round(wall, 1),
        }


# -- running the generator and locust --------------------------------------------------------------


def run_generator(args: Sequence[str], work: Path, name: str, timeout: float) -> dict[str, Any]:
    out = work / f"{name}.json"
    command = [sys.executable, "-m", "loadtest.generator", *args, "--json-out", str(out)]
    log(f"{name}: {shlex.join(command[1:])}")
    load = OtherLoad()
    completed = subprocess.run(
        command, cwd=REPO, timeout=timeout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, check=False,
    )  # fmt: skip
    for line in completed.stdout.splitlines():
        log(f"  {line}")
    if completed.returncode != 0:
        raise LoadTestError(f"generator {name} failed ({completed.returncode})")
    result: dict[str, Any] = json.loads(out.read_text())
    result["machine"] = load.result()
    return result


def run_locust(
    target: Target, plan: Plan, work: Path, channels: Path | None, manifest: Path | None
) -> dict[str, Any]:
    """A short headless locust run with FreePublisher, PaidPublisher and QueryUser."""
    import psutil

    users = {"FreePublisher": plan.locust_free_users, "QueryUser": plan.locust_query_users}
    if channels is not None and plan.locust_paid_users:
        users["PaidPublisher"] = plan.locust_paid_users
    total = sum(users.values())
    prefix = work / "locust"
    env = {
        **os.environ,
        "LOCUST_FREEPUBLISHER_USERS": str(plan.locust_free_users),
        "LOCUST_FREE_RATE": str(plan.locust_free_rate),
        "LOCUST_PAIDPUBLISHER_USERS": str(users.get("PaidPublisher", 0)),
        "LOCUST_PAID_RATE": str(plan.locust_paid_rate),
        "LOCUST_QUERYUSER_USERS": str(plan.locust_query_users),
        "LOCUST_QUERY_RATE": str(plan.locust_query_rate),
        "LOCUST_PRESIGN": str(int(max(plan.locust_free_rate, plan.locust_paid_rate)
                                  * plan.locust_seconds * 1.2) + 10),
        "LOCUST_SOURCES": "32",
    }  # fmt: skip
    if channels is not None:
        data = json.loads(channels.read_text())
        own = work / "channels-locust.json"
        tail = data["channels"][-plan.locust_paid_users :]
        own.write_text(json.dumps({**data, "channels": tail}))
        env["LOCUST_CHANNELS_FILE"] = str(own)
    if manifest is not None:
        env["LOCUST_MANIFEST"] = str(manifest)
    command = [
        sys.executable, "-m", "locust", "-f", str(REPO / "loadtest" / "locustfile.py"),
        "--headless", "-u", str(total), "-r", str(total), "--run-time",
        f"{plan.locust_seconds:g}s", "--host", target.url, "--csv", str(prefix),
        "--only-summary", "--stop-timeout", "5", "--loglevel", "WARNING", *users,
    ]  # fmt: skip
    log(f"locust: {shlex.join(command[1:])}")
    load = OtherLoad()
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    cpu_samples: list[float] = []
    ps = psutil.Process(proc.pid)
    ps.cpu_percent(None)

    def sample() -> None:
        while proc.poll() is None:
            time.sleep(1)
            with contextlib.suppress(psutil.Error):
                cpu_samples.append(ps.cpu_percent(None))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        output, _ = proc.communicate(timeout=plan.locust_seconds + 120)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    sampler.join(5)
    tail = output.splitlines()[-15:]
    rows = read_locust_stats(Path(f"{prefix}_stats.csv"))
    busy = sorted(cpu_samples[1:-1] or cpu_samples or [0.0])
    return {
        "scenario": "locust",
        "exit_code": proc.returncode,
        "users": users,
        "seconds": plan.locust_seconds,
        "rows": rows,
        "locust_cpu_percent_median": busy[len(busy) // 2],
        "locust_cpu_percent_max": busy[-1],
        "output_tail": tail,
        "machine": load.result(),
    }


def _number(row: dict[str, str], key: str) -> float | None:
    value = row.get(key)
    if value in (None, "", "N/A"):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def read_locust_stats(path: Path) -> list[dict[str, Any]]:
    """Rows of locust's `<prefix>_stats.csv` (milliseconds, as locust reports them)."""
    if not path.exists():
        return []
    with path.open() as handle:
        return [
            {
                "type": row.get("Type", ""),
                "name": row.get("Name", ""),
                "requests": int(_number(row, "Request Count") or 0),
                "failures": int(_number(row, "Failure Count") or 0),
                "p50": _number(row, "50%"),
                "p95": _number(row, "95%"),
                "p99": _number(row, "99%"),
                "rps": _number(row, "Requests/s"),
            }
            for row in csv.DictReader(handle)
        ]


# -- EXPLAIN ---------------------------------------------------------------------------------------


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


def explain_shapes(database_url: str, manifest: dict[str, Any], samples: int = 3) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) the relay's own SQL (build_select) for every query shape."""
    import psycopg
    from psycopg import ClientCursor

    from cluster.nostr.filters import FilterLimits, parse_filter
    from cluster.store.pool import SESSION_OPTIONS
    from cluster.store.sql import build_select

    rng = random.Random(3)
    out: dict[str, Any] = {}
    with psycopg.connect(
        database_url,
        cursor_factory=ClientCursor,
        autocommit=True,
        options=SESSION_OPTIONS,  # the relay's own session settings, so its own plans
    ) as conn:
        for shape in QUERY_SHAPES:
            runs = []
            for _ in range(samples):
                flt = parse_filter(make_filter(shape, manifest, rng), FilterLimits())
                sql, params = build_select([flt], int(time.time()))
                with conn.cursor() as cur:
                    cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
                    row = cur.fetchone()
                document = row[0][0] if row else {}
                nodes = list(_plan_nodes(document.get("Plan", {})))
                top = document.get("Plan", {})
                runs.append(
                    {
                        "rows_removed": int(
                            sum(
                                n.get("Rows Removed by Filter", 0)
                                + n.get("Rows Removed by Index Recheck", 0)
                                for n in nodes
                            )
                        ),
                        "blocks": int(
                            top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0)
                        ),
                        "execution_ms": document.get("Execution Time"),
                        "planning_ms": document.get("Planning Time"),
                        "indexes": sorted({n["Index Name"] for n in nodes if "Index Name" in n}),
                        "seq_scan": any(
                            n.get("Node Type") == "Seq Scan" and n.get("Relation Name") == "events"
                            for n in nodes
                        ),
                        "nodes": [n.get("Node Type") for n in nodes],
                        "rows": document.get("Plan", {}).get("Actual Rows"),
                    }
                )
            times = sorted(r["execution_ms"] or 0.0 for r in runs)
            out[shape] = {
                "execution_ms_median": round(times[len(times) // 2], 3),
                "execution_ms_max": round(times[-1], 3),
                "indexes": sorted({i for r in runs for i in r["indexes"]}),
                "seq_scan": any(r["seq_scan"] for r in runs),
                "plan": " → ".join(runs[0]["nodes"]),
                "rows_removed_max": max(r["rows_removed"] for r in runs),
                "blocks_max": max(r["blocks"] for r in runs),
            }
    return out


# -- profiling -------------------------------------------------------------------------------------


def find_py_spy() -> str | None:
    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


def busiest_worker(target: Target) -> int | None:
    import psutil

    workers = []
    for name, pids in target.watch.items():
        if not name.startswith("instance-"):
            continue
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                workers.extend(psutil.Process(pid).children())
    if not workers:
        return None
    for proc in workers:
        with contextlib.suppress(psutil.Error):
            proc.cpu_percent(None)
    time.sleep(1.0)
    scored = []
    for proc in workers:
        with contextlib.suppress(psutil.Error):
            scored.append((proc.cpu_percent(None), proc.pid))
    return max(scored)[1] if scored else None


LIBRARIES = ("redis", "psycopg", "psycopg_pool", "aiohttp", "asyncio", "prometheus_client")


def summarize_profile(folded: Path, top: int = 15) -> dict[str, Any]:
    """Shares of py-spy samples (raw/collapsed stacks): by the innermost relay function on the
    stack (`owner`: which part of the relay the time belongs to) and by leaf frame (`self`)."""
    owner: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    frame_re = re.compile(r"^(.*?) \((.*?)(?::\d+)?\)$")

    def parse(frame: str) -> tuple[str, str]:
        match = frame_re.match(frame.strip())
        if not match:
            return frame.strip(), ""
        func, path = match.groups()
        return func, path

    def label(func: str, path: str) -> str:
        return f"{func} ({'/'.join(Path(path).parts[-2:])})" if path else func

    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [parse(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        own[label(*frames[-1])] += count
        relay_frames = [
            (func, path)
            for func, path in frames
            if (path.startswith("cluster/") or "/cluster/" in path)
            and not path.endswith(("cluster/cli.py", "relay/server.py"))
        ]
        if relay_frames:
            owner[label(*relay_frames[-1])] += count
        elif frames[-1][0].endswith(".run") and "aiohttp/worker.py" in frames[-1][1]:
            owner["(event loop: uvloop C code, socket I/O, idle)"] += count
        else:
            # A coroutine resumed straight from the loop: py-spy shows no awaiting relay frame.
            loop_at = max(
                (i for i, (func, path) in enumerate(frames) if "aiohttp/worker.py" in path),
                default=-1,
            )
            libraries = [
                (path.split("/", 1)[0], func, path)
                for func, path in frames[loop_at + 1 :]
                if path.split("/", 1)[0] in LIBRARIES
            ]
            lib, func, path = libraries[0] if libraries else ("other", *frames[-1])
            owner[f"[{lib}] {label(func, path)}"] += count
    if not total:
        return {"samples": 0}

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in counter.most_common(top)]

    return {"samples": total, "owner": share(owner), "self": share(own)}


def run_profile(target: Target, plan: Plan, work: Path) -> dict[str, Any] | None:
    """py-spy records the busiest relay worker while 1,000 events/s are published."""
    py_spy = find_py_spy()
    if py_spy is None or plan.profile_seconds <= 0:
        return None
    gen = subprocess.Popen(
        [sys.executable, "-m", "loadtest.generator", "publish", "--url", target.url,
         "--rate", str(plan.accept_rate), "--duration", str(plan.profile_seconds + 8),
         "--connections", str(plan.accept_connections),
         "--json-out", str(work / "profile-load.json")],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(4)  # pre-signing and connecting
        pid = busiest_worker(target)
        if pid is None:
            return None
        folded = work / f"profile-{pid}.txt"
        log(f"profile: py-spy record --pid {pid} for {plan.profile_seconds:g}s")
        subprocess.run(
            [py_spy, "record", "--pid", str(pid), "--duration", str(int(plan.profile_seconds)),
             "--rate", "200", "--format", "raw", "--nonblocking", "--output", str(folded)],
            timeout=plan.profile_seconds + 60, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    finally:
        try:
            gen.wait(plan.profile_seconds + 60)
        except subprocess.TimeoutExpired:
            gen.kill()
    if not folded.exists():
        return None
    summary = summarize_profile(folded)
    summary["pid"] = pid
    summary["file"] = str(folded)
    return summary


# -- machine facts ---------------------------------------------------------------------------------


def _version(command: list[str], pattern: str = r"([\d.]+)") -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not found"
    match = re.search(pattern, result.stdout + result.stderr)
    return match.group(1) if match else (result.stdout + result.stderr).strip()[:60]


def machine_info(target: Target) -> dict[str, Any]:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_gib = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        mem_gib = round(mem_kib / 2**20, 1)
    postgres = "unknown"
    if target.database_url:
        with contextlib.suppress(Exception):
            import psycopg

            with psycopg.connect(target.database_url) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                postgres = str(row[0]) if row else "unknown"
    redis_version = "unknown"
    if target.redis_url:
        with contextlib.suppress(Exception):
            import redis

            client = redis.Redis.from_url(target.redis_url)
            redis_version = str(client.info("server").get("redis_version"))
            client.close()
    if redis_version == "unknown":
        redis_version = _version(["redis-server", "--version"], r"v=([\d.]+)")
    import aiohttp

    return {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "postgres": postgres,
        "redis": redis_version,
        "nginx": _version(["nginx", "-v"], r"nginx/([\d.]+)"),
        "locust": _version([sys.executable, "-m", "locust", "--version"], r"locust ([\d.]+)"),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
    }


# -- the report ------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _triple(summary: dict[str, Any] | None) -> str:
    if not summary or not summary.get("count"):
        return "-"
    return f"{_ms(summary.get('p50'))} / {_ms(summary.get('p95'))} / {_ms(summary.get('p99'))}"


def _mib(value: Any) -> str:
    """A signed MiB delta (`+21.9`, `-0.5`), or `-` when unknown."""
    return f"{value:+.1f}" if isinstance(value, (int, float)) else "-"


def _explained(e: dict[str, Any]) -> str:
    if not e:
        return "-"
    return f"{_ms(e.get('execution_ms_median'))} / {e.get('rows_removed_max', 0):,}"


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("**pass**" if ok else "**FAIL**")


def _errors(result: dict[str, Any]) -> str:
    errors = result.get("errors") or {}
    if not errors:
        return "0"
    return ", ".join(f"{v} {k}" for k, v in sorted(errors.items(), key=lambda kv: -kv[1])[:3])


def sustainable(steps: Sequence[dict[str, Any]], p95_limit: float | None) -> float | None:
    best = None
    for step in steps:
        kept_up = step["achieved_rate"] >= 0.99 * step["offered_rate"] and not step["error_count"]
        p95 = step["latency_ms"].get("p95")
        if kept_up and (p95_limit is None or (p95 is not None and p95 < p95_limit)):
            best = max(best or 0, step["offered_rate"])
    return best


def results_rows(results: dict[str, Any]) -> list[list[str]]:
    """Target, scenario, p50/p95/p99, achieved, goal, result, tool."""
    rows: list[list[str]] = []
    gen = "generator (asyncio)"

    def pub_row(label: str, r: dict[str, Any], limit: float) -> list[str]:
        p95 = r["latency_ms"].get("p95")
        kept_up = r["achieved_rate"] >= 0.99 * r["offered_rate"] and not r["error_count"]
        ok = p95 is not None and p95 < limit and kept_up
        return [
            label,
            f"{r['offered_rate']:g} ev/s x {r['duration_s']:g} s, {r['connections']} conns",
            _triple(r["latency_ms"]),
            f"{r['achieved_rate']:,.0f} / {r['offered_rate']:,.0f} ev/s; errors {_errors(r)}",
            f"p95 < {limit:g} ms, achieved = offered",
            _verdict(ok),
            gen,
        ]

    if "accept" in results:
        r = results["accept"]
        rows.append(pub_row("Event acceptance, free kind (EVENT → OK)", r, 10))
        m = r.get("relay_histogram")
        if m and m.get("count"):
            rows.append([
                "… same run, in-relay `relay_event_acceptance_seconds`",
                f"{m['count']:,} events (histogram buckets)",
                _triple(m), "-", "p95 < 10 ms",
                _verdict(m["p95"] is not None and m["p95"] < 10), "relay /metrics",
            ])  # fmt: skip
    if "paid" in results:
        r = results["paid"]
        rows.append(pub_row(f"Paid kind {r['kind']} (EVENT → OK, claim verified)", r, 50))
        m = r.get("relay_histogram")
        if m and m.get("count"):
            rows.append([
                "Payment verification, in-relay `relay_payment_verification_seconds`",
                f"{m['count']:,} paid events (histogram buckets)",
                _triple(m), "-", "p95 < 50 ms",
                _verdict(m["p95"] is not None and m["p95"] < 50), "relay /metrics",
            ])  # fmt: skip
    for key, label in (("delivery", "Subscription delivery"), ("broadcast", "Broadcast delivery")):
        if key not in results:
            continue
        r = results[key]
        p95 = r["latency_ms"].get("p95")
        ok = p95 is not None and p95 < 100 and r["delivered"] == r["expected_deliveries"]
        rows.append([
            f"{label} (publish → subscriber receives)",
            f"{r['subscribers']:,} subscribers, {r['offered_rate']:g} ev/s, each event to "
            f"{r['fanout']:,} subscribers",
            _triple(r["latency_ms"]),
            f"{r['delivered']:,} / {r['expected_deliveries']:,} delivered "
            f"({r['delivery_rate']:,.0f}/s); errors {_errors(r)}",
            "p95 < 100 ms", _verdict(ok), gen,
        ])  # fmt: skip
    explain = results.get("explain") or {}
    indexed = all(v["indexes"] and not v["seq_scan"] for v in explain.values()) if explain else None
    for key in ("query", "query_load"):
        if key not in results:
            continue
        r = results[key]
        p95 = r["latency_ms"].get("p95")
        ok = p95 is not None and p95 < 5 and not r["error_count"] and indexed is not False
        rows.append([
            f"Database query (REQ → EOSE), all shapes{', under load' if key != 'query' else ''}",
            f"{results.get('fill', {}).get('count', 0):,} stored events, {r['offered_rate']:g} q/s"
            f" over {r['connections']} conns",
            _triple(r["latency_ms"]),
            f"{r['achieved_rate']:,.0f} / {r['offered_rate']:,.0f} q/s; errors {_errors(r)}",
            "p95 < 5 ms, EXPLAIN uses an index", _verdict(ok), gen,
        ])  # fmt: skip
    if "connections" in results:
        r = results["connections"]
        ok = r["alive_at_end"] == r["connections"] and not r["error_count"]
        rss = r.get("rss_per_1000") or {}
        rows.append([
            "Concurrent WebSocket connections through nginx",
            f"{r['connections']:,} opened ({r['subs_per_connection']} subscription each), "
            f"held {r['hold_s']:g} s",
            f"connect {_triple(r['connect_ms'])}",
            f"{r['alive_at_end']:,} held; relay RSS {_mib(rss.get('relay_connections_mib'))} "
            f"MiB per 1,000 conns, nginx {_mib(rss.get('nginx_mib'))} MiB; errors {_errors(r)}",
            f"{r['connections']:,} held", _verdict(ok), gen,
        ])  # fmt: skip
    if "connections_direct" in results:
        r = results["connections_direct"]
        ok = r["alive_at_end"] == r["connections"] and not r["error_count"]
        rss = r.get("rss_per_1000") or {}
        rows.append([
            "... same, straight to the instances (no nginx)",
            f"{r['connections']:,} opened, alternating between instances, held {r['hold_s']:g} s",
            f"connect {_triple(r['connect_ms'])}",
            f"{r['alive_at_end']:,} held; relay RSS {_mib(rss.get('relay_connections_mib'))} "
            f"MiB per 1,000 conns; errors {_errors(r)}",
            "(diagnostic)", _verdict(ok), gen,
        ])  # fmt: skip
    if "subscriptions" in results:
        r = results["subscriptions"]
        live = r.get("live") or {}
        latency = live.get("latency_ms")
        p95 = (latency or {}).get("p95")
        target_subs = r["connections"] * r["subs_per_connection"]
        ok = (
            p95 is not None
            and p95 < 100
            and live.get("delivered") == live.get("expected_deliveries")
            and r["subscriptions"] >= target_subs
        )
        delivered = (
            f"{live['delivered']:,} / {live['expected_deliveries']:,} delivered"
            if "delivered" in live
            else f"live run failed: {live.get('failed', 'not run')}"
        )
        rows.append([
            "Active subscriptions with live matching (publish → receive)",
            f"{r['subscriptions']:,} of {target_subs:,} subscriptions on {r['opened']:,} conns,"
            f" {live.get('offered_rate', 0):g} ev/s",
            _triple(latency),
            f"{delivered}; errors {_errors(live) if live else '-'}",
            "p95 < 100 ms", _verdict(ok), gen,
        ])  # fmt: skip
    if "sweep" in results:
        steps = results["sweep"]["steps"]
        rate = sustainable(steps, 10)
        any_rate = sustainable(steps, None)
        rows.append([
            "Highest sustainable rate (free kind, EVENT → OK)",
            "sweep " + ", ".join(f"{s['offered_rate']:g}" for s in steps) + " ev/s",
            "see sweep table",
            f"{any_rate or 0:,.0f} ev/s kept up; {rate or 0:,.0f} ev/s with p95 < 10 ms; "
            f"{sustainable(steps, 100) or 0:,.0f} ev/s with p95 < 100 ms",
            "≥ 1,000 ev/s", _verdict((rate or 0) >= 1000), gen,
        ])  # fmt: skip
    return rows


def render_markdown(results: dict[str, Any], machine: dict[str, Any], command: str) -> str:
    lines = [
        "# Performance",
        "",
        "Generated by `loadtest/bench.py`; do not edit by hand, re-run the bench instead.",
        "",
        f"- Date: {results['finished_at']} (total bench time {results['elapsed_s'] / 60:.1f} min)",
        f"- Command: `{command}`",
        f"- Cluster: {results['cluster']}",
        f"- Machine: {machine['cpu_model']}, {machine['cores']} cores, "
        f"{machine['memory_gib']} GiB RAM, Linux {machine['kernel']}",
        f"- Software: Python {machine['python']}, aiohttp {machine['aiohttp']}, PostgreSQL "
        f"{machine['postgres']}, Redis {machine['redis']}, nginx {machine['nginx']}, "
        f"locust {machine['locust']}",
        f"- Everything on the same machine: relay instances, PostgreSQL, Redis, the ledger, "
        f"nginx and the load generator. Load average at start: "
        f"{', '.join(str(x) for x in machine['loadavg_at_start'])}.",
        "",
        "## Results",
        "",
        "Latencies in milliseconds. End-to-end figures are measured by the client from the "
        "moment each message was *due* (open loop: no coordinated omission), through nginx.",
        "",
        "| Target | Scenario | p50 / p95 / p99 (ms) | Achieved | Goal | Result | Tool |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results_rows(results):
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    background = [
        (name, r["machine"])
        for name, r in results.items()
        if isinstance(r, dict)
        and isinstance(r.get("machine"), dict)
        and name not in ("warmup", "query_warmup")
    ]
    if background:
        lines += [
            "Machine load during each phase (cores busy; `other` = processes that are not this "
            "bench, its cluster or its load generator — e.g. other jobs on a shared machine):",
            "",
            "| Phase | machine busy (cores) | other processes (cores) "
            "| generator (share of 1 core) |",
            "|---|---|---|---|",
        ]
        for name, load in background:
            gen = results[name].get("generator", {}).get("core_share", "-")
            lines.append(
                f"| {name} | {load['machine_busy_cores']} | {load['other_cores']} | {gen} |"
            )
        lines.append("")
    if "sweep" in results:
        lines += [
            "## Rate sweep (free kind, EVENT → OK)",
            "",
            "![latency percentiles against offered rate](performance-latency.png)",
            "",
            "| Offered ev/s | Achieved ev/s | p50 | p95 | p99 | max | Errors "
            "| Generator core share |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for s in results["sweep"]["steps"]:
            lat = s["latency_ms"]
            lines.append(
                f"| {s['offered_rate']:,.0f} | {s['achieved_rate']:,.0f} | {_ms(lat['p50'])} | "
                f"{_ms(lat['p95'])} | {_ms(lat['p99'])} | {_ms(lat['max'])} | {_errors(s)} | "
                f"{s['generator']['core_share']} |"
            )
        steps = results["sweep"]["steps"]
        lines += [
            "",
            f"Highest offered rate the cluster kept up with (achieved ≥ 99% of offered, no "
            f"errors): **{sustainable(steps, None) or 0:,.0f} ev/s**; with p95 < 10 ms as well: "
            f"**{sustainable(steps, 10) or 0:,.0f} ev/s**; with p95 < 100 ms: "
            f"**{sustainable(steps, 100) or 0:,.0f} ev/s** (sweep steps of "
            f"{results['sweep']['duration_s']:g} s; the sweep stops after two overloaded steps).",
            "",
        ]
    if "query" in results:
        q = results["query"]
        loaded = (results.get("query_load") or {}).get("by_shape", {})
        explain = results.get("explain") or {}
        after = results.get("explain_after") or {}
        fill_info = results.get("fill", {})
        lines += [
            "## Database queries (REQ → EOSE by filter shape)",
            "",
            f"{fill_info.get('count', 0):,} stored events (events and their tag index"
            f" {fill_info.get('table_size', '?')}"
            f", {FILL_AUTHORS:,} authors with a skewed share each, 30 days of timestamps). "
            f"End-to-end REQ → EOSE through nginx at {q['offered_rate']:g} q/s (and at "
            f"{(results.get('query_load') or {}).get('offered_rate', 0):g} q/s), run before the "
            "publishing scenarios; then `EXPLAIN (ANALYZE, BUFFERS)` of the relay's own SQL "
            "(`cluster.store.sql.build_select`) for three samples of each shape"
            + (
                f", and again after the publishing scenarios had added "
                f"{results.get('events_after', 0) - fill_info.get('count', 0):,} recent events."
                if after
                else "."
            ),
            "",
            "| Shape | Example filter (values vary per query) | p50 / p95 / p99 (ms) | "
            "p95 under load | Events returned (all queries) | "
            "EXPLAIN exec ms (median) / rows filtered out (max) | after publishing | "
            "Index used | Plan |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for shape, s in q["by_shape"].items():
            e = explain.get(shape, {})
            a = after.get(shape, {})
            example = json.dumps(s["filter_example"])
            example = re.sub(r'"([0-9a-f]{10})[0-9a-f]{54}"', r'"\1…"', example)
            if len(example) > 90:
                example = example[:87] + "…"
            indexes = ", ".join(e.get("indexes", [])) or ("**none (seq scan)**" if e else "-")
            lines.append(
                f"| {shape} | `{example}` | {_triple(s)} | "
                f"{_ms((loaded.get(shape) or {}).get('p95'))} | {s['events']:,} | "
                f"{_explained(e)} | {_explained(a)} | {indexes} | {e.get('plan', '-')}"
                + (f" (after: {a['plan']})" if a and a.get("plan") != e.get("plan") else "")
                + " |"
            )
        lines.append("")
    held = [
        (k, results[k])
        for k in ("connections", "connections_direct", "subscriptions")
        if k in results
    ]
    if held:
        lines += ["## Connections and memory", ""]
    for name, h in held:
        rss = h.get("rss_per_1000") or {}
        lines += [
            f"**{name}**: {h['opened']:,} of {h['connections']:,} WebSocket connections opened "
            f"{'straight to the instances' if name.endswith('direct') else 'through nginx'} "
            f"in {h['connect_s']:g} s (failures: {h['connect_failures'] or 'none'}"
            f"), {h['subs_per_connection']} subscription(s) each ({h['subscriptions']:,} active, "
            f"REQ → EOSE {_triple(h['req_eose_ms'])} ms while subscribing), "
            f"{h['alive_at_end']:,} still open at the end. RSS summed over processes (relay = "
            "gunicorn masters + workers of every instance):",
            "",
            "| Phase | relay instances (MiB) | nginx (MiB) | generator (MiB) |",
            "|---|---|---|---|",
        ]
        for phase in ("baseline", "connected", "subscribed", "end"):
            snap = h["memory"].get(phase, {})
            relay = sum(v["rss_mib"] for k, v in snap.items() if k.startswith("instance-"))
            lines.append(
                f"| {phase} | {relay:,.1f} | {snap.get('nginx', {}).get('rss_mib', '-')} | "
                f"{snap.get('generator', {}).get('rss_mib', '-')} |"
            )
        lines += [
            "",
            f"Per 1,000 connections: relay **{_mib(rss.get('relay_connections_mib'))} MiB** for "
            f"the sockets, **{_mib(rss.get('relay_subscriptions_mib'))} MiB** more for their "
            f"{h['subs_per_connection']} subscription(s) each "
            f"(**{rss.get('relay_per_1000_subscriptions_mib', '-')} MiB per 1,000 "
            f"subscriptions**); nginx **{_mib(rss.get('nginx_mib'))} MiB**. Python does not "
            "return freed memory to the OS promptly, so a phase that follows a bigger one "
            "reuses memory and shows a smaller growth (a lower bound).",
            "",
        ]
        counts = h["memory"].get("subscribed_health") or []
        if counts:
            lines.append(
                "Per instance (`/health` of one worker each): "
                + ", ".join(
                    f"{c.get('url')}: {c.get('connections', '?')} connections, "
                    f"{c.get('subscriptions', '?')} subscriptions"
                    for c in counts
                )
                + "."
            )
            lines.append("")
    if results.get("matching"):
        lines += [
            "## Subscription matching (per-worker index, micro-benchmark)",
            "",
            "`loadtest/bench_matching.py`: one worker's `SubscriptionIndex.match` per event,"
            " in process. Mix: 60% author filters (1-20 followed keys), 20% `#p`/`#e` filters,"
            " 15% kinds-only filters with `since`, 5% broad filters (the last two match most"
            " events).",
            "",
            "| subscriptions | broad | match mean µs | match p95 µs | candidates mean"
            " | matched mean |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for row in results["matching"]:
            lines.append(
                f"| {row['size']:,} | {row['broad']:,} | {row['mean_us']:.1f}"
                f" | {row['p95_us']:.1f} | {row['mean_candidates']:.0f}"
                f" | {row['mean_matched']:.1f} |"
            )
        lines.append("")
    if "locust" in results:
        lo = results["locust"]
        lines += [
            "## Locust (for comparison)",
            "",
            f"`locust --headless` for {lo['seconds']:g} s with {lo['users']} (closed loop per "
            f"user, paced with constant_throughput; websocket-client under gevent). Locust's "
            f"process used a median {lo['locust_cpu_percent_median']:.0f}% "
            f"(max {lo['locust_cpu_percent_max']:.0f}%) of one core; exit code "
            f"{lo['exit_code']}.",
            "",
            "| Type | Name | Requests | Failures | p50 | p95 | p99 | req/s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in lo["rows"]:
            lines.append(
                f"| {row['type']} | {row['name']} | {row['requests']:,} | {row['failures']} | "
                f"{_ms(row['p50'])} | {_ms(row['p95'])} | {_ms(row['p99'])} | "
                f"{row['rps'] or 0:,.1f} |"
            )
        lines += [
            "",
            "Locust's percentiles are rounded to its histogram buckets (whole milliseconds "
            "below 100 ms). The headline figures above come from the asyncio generator, which "
            "runs open loop and stays far from saturating its core (see the generator column).",
            "",
        ]
    if results.get("profile"):
        p = results["profile"]
        lines += [
            "## Where the time goes (py-spy, one relay worker)",
            "",
            f"`py-spy record --nonblocking` on the busiest worker (pid {p['pid']}) while "
            f"{results.get('profile_rate', 0):g} events/s were published; {p['samples']:,} "
            "samples. Share of samples:",
            "",
            "| % | innermost relay function on the stack | | % | leaf frame (self time) |",
            "|---|---|---|---|---|",
        ]
        for (inc_name, inc), (own_name, own) in zip(p["owner"], p["self"], strict=False):
            lines.append(f"| {inc} | `{inc_name}` | | {own} | `{own_name}` |")
        lines.append("")
    notes = results.get("notes") or []
    lines += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    lines += [
        "## Reproduce",
        "",
        "```",
        "make bench                                   # = .venv/bin/python -m loadtest.bench",
        ".venv/bin/python -m loadtest.bench --quick   # smoke run, about a minute",
        ".venv/bin/python -m loadtest.bench --fill 200000 --skip broadcast,locust",
        "```",
        "",
        "Raw results (every percentile, error and memory sample) go to `results.json` in the "
        "data dir (`--data-dir`), else to `$TMPDIR/relay-bench-results-<time>.json`; "
        "`--results-json PATH` puts them elsewhere.",
        "",
    ]
    return "\n".join(lines)


def plot_sweep(results: dict[str, Any], path: Path) -> bool:
    steps = (results.get("sweep") or {}).get("steps") or []
    if not steps:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offered = [s["offered_rate"] for s in steps]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(8, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1.4]}
    )
    for key, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-")):
        top.plot(offered, [s["latency_ms"][key] for s in steps], style, label=key)
    top.axhline(10, color="red", linestyle="--", linewidth=1, label="target p95 < 10 ms")
    top.set_yscale("log")
    top.set_ylabel("EVENT → OK latency (ms, log)")
    top.set_title("Event acceptance (free kind) against offered rate")
    top.grid(True, which="both", alpha=0.3)
    top.legend()
    bottom.plot(offered, offered, "k--", linewidth=1, label="offered")
    bottom.plot(offered, [s["achieved_rate"] for s in steps], "o-", label="achieved")
    bottom.set_xlabel("offered rate (events/s)")
    bottom.set_ylabel("events/s")
    bottom.grid(True, alpha=0.3)
    bottom.legend()
    fig.text(
        0.01, 0.005,
        f"{results.get('cluster_short', '')}; asyncio generator on the same machine",
        fontsize=8, color="gray",
    )  # fmt: skip
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- orchestration ---------------------------------------------------------------------------------


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
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="per instance (2 cores: 1 each)")
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
    return parser


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.from_results:
        saved: dict[str, Any] = json.loads(Path(args.from_results).read_text())
        plot_sweep(saved, Path(args.plot))
        Path(args.output).write_text(
            render_markdown(
                saved, saved["machine_info"], saved.get("command", "python -m loadtest.bench")
            )
        )
        log(f"report: {args.output} (from {args.from_results})")
        return 0
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
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(SCENARIOS)
    if unknown:
        print(f"unknown scenarios in --skip: {sorted(unknown)}", file=sys.stderr)
        return 2
    soft, hard = raise_nofile_limit()
    log(f"RLIMIT_NOFILE soft={soft} hard={hard}")
    notes: list[str] = list(args.note)
    needed = plan.hold_connections + 2000
    if "connections" not in skip and soft < needed:
        notes.append(
            f"RLIMIT_NOFILE is {soft}; {plan.hold_connections:,} connections need about "
            f"{needed:,} descriptors in the generator, so the hold scenario may fail early."
        )
    started = time.monotonic()
    temp_dir: Path | None = None
    cluster: LocalCluster | None = None
    results: dict[str, Any] = {"notes": notes}
    command = "python -m loadtest.bench" + (" " + shlex.join(argv) if argv else "")
    if argv is None:
        command = "python -m loadtest.bench" + (
            " " + shlex.join(sys.argv[1:]) if sys.argv[1:] else ""
        )
    try:
        if args.url:
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
            work = Path(tempfile.mkdtemp(prefix="relay-bench-"))
            temp_dir = None if args.keep_data else work
            results["cluster"] = f"existing relay at {args.url}"
            results["cluster_short"] = f"relay at {args.url}"
        else:
            if args.data_dir:
                work = Path(args.data_dir).absolute()
            else:
                work = Path(tempfile.mkdtemp(prefix="relay-bench-"))
                temp_dir = None if args.keep_data else work
            port = args.port or _free_port()
            cluster = LocalCluster(work, args.instances, args.workers, port, DEFAULT_PAID_KIND)
            target = cluster.start()
            results["cluster_short"] = (
                f"relay-cluster up: {args.instances} instances x {args.workers} workers + nginx"
            )
            results["cluster"] = (
                f"`relay-cluster up --instances {args.instances} --workers {args.workers}` "
                f"(embedded PostgreSQL, Redis, ledger, nginx; paid kind "
                f"{target.paid_kind} at {target.paid_price} sats)"
            )
        metrics_urls = args.metrics_url or target.instance_urls or [target.url]
        require_loopback(target.url)
        log(f"target {target.url}; instances {metrics_urls}; work dir {work}")
        machine = machine_info(target)
        results["machine_info"] = machine
        run_scenarios(target, plan, skip, work, metrics_urls, results)
    except (LoadTestError, subprocess.TimeoutExpired, OSError) as exc:
        log(f"bench failed: {exc}")
        results.setdefault("notes", []).append(f"The bench stopped early: {exc}")
        results["failed"] = str(exc)
    finally:
        if cluster is not None:
            cluster.stop()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["command"] = command
    results["finished_at"] = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    machine = results.get("machine_info") or {}
    if machine:
        if args.results_json:
            results_path = Path(args.results_json)
        elif temp_dir is None:
            results_path = work / "results.json"
        else:  # the work dir is removed below: keep the raw results next to it
            stamp = time.strftime("%Y%m%d-%H%M%S")
            results_path = Path(tempfile.gettempdir()) / f"relay-bench-results-{stamp}.json"
        results_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
        log(f"raw results: {results_path}")
        if plot_sweep(results, Path(args.plot)):
            log(f"plot: {args.plot}")
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(render_markdown(results, machine, command))
        log(f"report: {args.output}")
        for row in results_rows(results):
            log(" | ".join(row))
    if temp_dir is not None:
        shutil.rmtree(temp_dir, ignore_errors=True)
    log(f"done in {results['elapsed_s'] / 60:.1f} min")
    return 1 if results.get("failed") else 0


def run_scenarios(
    target: Target,
    plan: Plan,
    skip: set[str],
    work: Path,
    metrics_urls: list[str],
    results: dict[str, Any],
) -> None:
    notes: list[str] = results["notes"]
    url = target.url
    drain = ["--drain", str(plan.drain)]

    def bounded(seconds: float) -> float:
        return seconds * 2 + 180

    # 1. Fill.
    manifest_path = (target.data_dir or work) / "fill-manifest.json"
    manifest: dict[str, Any] | None = None
    if "fill" not in skip and target.database_url:
        manifest = fill(target.database_url, plan.fill, manifest_path)
        results["fill"] = manifest
        results["prewarm"] = prewarm(target.database_url)
    elif "fill" not in skip:
        notes.append(
            "No database URL: the fill, EXPLAIN and the query shapes' values were skipped."
        )

    # 2. Paid channels.
    channels_path: Path | None = None
    paid_possible = bool(target.paid_kind and target.ledger_url and target.ledger_token)
    if paid_possible and not {"paid", "locust"} <= skip:
        count = plan.paid_connections * plan.channels_per_connection + plan.locust_paid_users
        log(f"opening {count} payment channels on {target.ledger_url}")
        channels_path = work / "channels.json"
        open_channels(target, count, channels_path)
    elif "paid" not in skip:
        notes.append("No ledger or priced kind known: the paid scenario was skipped.")

    # 3. Queries on exactly the filled events (before the publishing scenarios add their own),
    # at a light rate (latency) and a heavier one (latency under load), then EXPLAIN.
    def query(name: str, rate: float, duration: float) -> None:
        args = ["query", "--url", url, "--rate", str(rate), "--duration", str(duration),
                "--connections", str(plan.query_connections)]  # fmt: skip
        if manifest is not None:
            args += ["--manifest", str(manifest_path)]
        before = scrape(metrics_urls)
        r = run_generator(args, work, name, bounded(duration))
        after = scrape(metrics_urls)
        r["relay_db_query"] = {
            labels: histogram_summary(histogram_delta(before, after, metric, labels))
            for (metric, labels) in after
            if metric == "relay_db_query_seconds"
        }
        results[name] = r

    if "query" not in skip:
        # Unreported warm-up on other values (another seed), as before the publishing phases:
        # fresh workers have cold code paths, no prepared statements and new backends.
        warmup = ["query", "--url", url, "--rate", str(plan.query_rate * 2), "--duration",
                  str(plan.warmup_seconds), "--connections", str(plan.query_connections),
                  "--seed", "7"]  # fmt: skip
        if manifest is not None:
            warmup += ["--manifest", str(manifest_path)]
        results["query_warmup"] = run_generator(warmup, work, "query_warmup", bounded(5))
        query("query", plan.query_rate, plan.query_duration)
        query("query_load", plan.query_load_rate, plan.query_load_duration)
    if "explain" not in skip and target.database_url and manifest is not None:
        log("EXPLAIN (ANALYZE) of every query shape")
        results["explain"] = explain_shapes(target.database_url, manifest)

    # 4. Held connections (RSS per 1,000), then 100,000 subscriptions with live matching;
    # first, so their memory growth is measured on workers that have not served load yet.
    def hold(
        name: str, connections: int, subs: int, hold_s: float, live: bool, to: str = url
    ) -> None:
        args = ["hold", "--url", to, "--connections", str(connections), "--subs", str(subs),
                "--hold", str(hold_s)]  # fmt: skip
        if live:
            args += ["--live-rate", str(plan.live_rate), "--live-duration",
                     str(plan.live_duration), "--live-subscribers", str(plan.live_subscribers),
                     "--live-fanout", str(plan.live_fanout)]  # fmt: skip
        for watched, pids in target.watch.items():
            args += ["--watch", f"{watched}={','.join(str(p) for p in pids)}"]
        for instance in metrics_urls:
            args += ["--health", instance]
        r = run_generator(args, work, name, bounded(hold_s + plan.live_duration + 150))
        r["rss_per_1000"] = rss_per_thousand(r)
        results[name] = r

    if "connections" not in skip:
        hold("connections", plan.hold_connections, plan.hold_subs, plan.hold_seconds, False)
        short = results["connections"]["opened"] < plan.hold_connections
        if short and target.instance_urls and target.instance_urls != [url]:
            # Fewer than asked got through nginx: is it nginx or the relay? Ask the relay.
            hold("connections_direct", plan.hold_connections, plan.hold_subs,
                 plan.hold_seconds, False, ",".join(target.instance_urls))  # fmt: skip
        nginx_log = (target.data_dir / "nginx" / "error.log") if target.data_dir else None
        if short and nginx_log is not None and nginx_log.exists():
            text = nginx_log.read_text(errors="replace")
            match = re.search(r"(\d+) worker_connections are not enough", text)
            if match:
                notes.append(
                    f"nginx logged `{match.group(0)}` while {plan.hold_connections:,} "
                    "connections were opened: `worker_connections` counts the client side and "
                    "the upstream side of every proxied WebSocket, so one nginx worker process "
                    f"holds at most about {int(match.group(1)) // 2:,} WebSockets. More worker "
                    "processes (or a higher worker_connections) in the nginx template would "
                    "lift this; the relay itself is measured without nginx in the row below it."
                )
    if "subscriptions" not in skip:
        hold("subscriptions", plan.sub_connections, plan.subs_per_connection, 2, True)

    # 5. Acceptance, free kind (after an unreported warm-up: pools, caches, JIT-free paths).
    if "accept" not in skip:
        results["warmup"] = run_generator(
            ["publish", "--url", url, "--rate", str(min(200.0, plan.accept_rate)), "--duration",
             str(plan.warmup_seconds), "--connections",
             str(plan.accept_connections), *drain],
            work, "warmup", bounded(5),
        )  # fmt: skip
        before = scrape(metrics_urls)
        r = run_generator(
            ["publish", "--url", url, "--rate", str(plan.accept_rate), "--duration",
             str(plan.accept_duration), "--connections", str(plan.accept_connections), *drain],
            work, "accept", bounded(plan.accept_duration),
        )  # fmt: skip
        r["relay_histogram"] = histogram_summary(
            histogram_delta(before, scrape(metrics_urls), "relay_event_acceptance_seconds")
        )
        results["accept"] = r

    # 6. Paid kind, payment verification.
    if "paid" not in skip and channels_path is not None:
        split = work / "channels-generator.json"
        data = json.loads(channels_path.read_text())
        split.write_text(
            json.dumps(
                {
                    **data,
                    "channels": data["channels"][
                        : plan.paid_connections * plan.channels_per_connection
                    ],
                }
            )
        )
        before = scrape(metrics_urls)
        r = run_generator(
            ["publish", "--url", url, "--rate", str(plan.paid_rate), "--duration",
             str(plan.paid_duration), "--connections", str(plan.paid_connections),
             "--channels", str(split), *drain],
            work, "paid", bounded(plan.paid_duration),
        )  # fmt: skip
        r["relay_histogram"] = histogram_summary(
            histogram_delta(before, scrape(metrics_urls), "relay_payment_verification_seconds")
        )
        results["paid"] = r

    # 7. Delivery (groups) and broadcast.
    if "delivery" not in skip:
        before = scrape(metrics_urls)
        r = run_generator(
            ["delivery", "--url", url, "--rate", str(plan.delivery_rate), "--duration",
             str(plan.delivery_duration), "--subscribers", str(plan.delivery_subscribers),
             "--fanout", str(plan.delivery_fanout)],
            work, "delivery", bounded(plan.delivery_duration),
        )  # fmt: skip
        r["relay_delivery_lag"] = histogram_summary(
            histogram_delta(before, scrape(metrics_urls), "relay_delivery_lag_seconds")
        )
        results["delivery"] = r
    if "broadcast" not in skip:
        results["broadcast"] = run_generator(
            ["delivery", "--url", url, "--rate", str(plan.broadcast_rate), "--duration",
             str(plan.broadcast_duration), "--subscribers", str(plan.delivery_subscribers),
             "--fanout", str(plan.delivery_subscribers), "--publishers", "2"],
            work, "broadcast", bounded(plan.broadcast_duration),
        )  # fmt: skip

    # 8. Rate sweep.
    if "sweep" not in skip:
        results["sweep"] = run_generator(
            ["sweep", "--url", url, "--rates", ",".join(f"{r:g}" for r in plan.sweep_rates),
             "--duration", str(plan.sweep_duration), "--pause", str(plan.sweep_pause),
             "--connections", str(plan.accept_connections)],
            work, "sweep", bounded(plan.sweep_duration * len(plan.sweep_rates) + 60),
        )  # fmt: skip

    # 9. Locust.
    if "locust" not in skip:
        results["locust"] = run_locust(
            target, plan, work, channels_path, manifest_path if manifest else None
        )

    # 10. EXPLAIN again: the same shapes after the publishing scenarios added recent events.
    explain_again = "explain" not in skip and "accept" in results
    if explain_again and target.database_url and manifest is not None:
        log("EXPLAIN (ANALYZE) again after publishing")
        results["explain_after"] = explain_shapes(target.database_url, manifest)
        results["events_after"] = count_events(target.database_url)

    # 11. Profile.
    if "profile" not in skip:
        profile = run_profile(target, plan, work)
        if profile:
            results["profile"] = profile
            results["profile_rate"] = plan.accept_rate
        elif plan.profile_seconds > 0:
            notes.append("py-spy not found (pip install py-spy): no profile section.")

    # 12. Subscription-index matching cost per event, in process (no sockets).
    if "matching" not in skip:
        from loadtest import bench_matching

        log("subscription matching micro-benchmark (1k, 10k, 100k subscriptions)")
        small = plan.fill < 100_000  # --quick
        events = 300 if small else 2000
        sizes = (1_000, 10_000) if small else (1_000, 10_000, 100_000)
        results["matching"] = [bench_matching.bench(size, events, seed=1) for size in sizes]

    notes.extend(interpretation_notes(results, plan))


def rss_per_thousand(hold: dict[str, Any]) -> dict[str, float | None]:
    memory = hold.get("memory", {})

    def relay(phase: str) -> float:
        snap = memory.get(phase, {})
        return sum(v["rss_mib"] for k, v in snap.items() if k.startswith("instance-"))

    def nginx(phase: str) -> float:
        return float(memory.get(phase, {}).get("nginx", {}).get("rss_mib", 0.0))

    thousands = max(1e-9, hold.get("opened", 0) / 1000)
    if not memory.get("baseline"):
        return {}
    return {
        "relay_connections_mib": round((relay("connected") - relay("baseline")) / thousands, 2),
        "relay_subscriptions_mib": round((relay("subscribed") - relay("connected")) / thousands, 2),
        "nginx_mib": round((nginx("connected") - nginx("baseline")) / thousands, 2),
        "relay_per_1000_subscriptions_mib": round(
            (relay("subscribed") - relay("connected"))
            / max(1e-9, hold.get("subscriptions", 0) / 1000),
            2,
        ),
    }


def interpretation_notes(results: dict[str, Any], plan: Plan) -> list[str]:
    notes = []
    before, after = results.get("explain") or {}, results.get("explain_after") or {}
    slower = [
        f"{shape} ({b['execution_ms_median']:.1f} → {a['execution_ms_median']:.0f} ms, "
        f"{a['rows_removed_max']:,} rows read and filtered out)"
        for shape, b in before.items()
        if (a := after.get(shape))
        and a["execution_ms_median"] > max(50.0, 10 * b["execution_ms_median"])
    ]
    if slower:
        notes.append(
            "Query plans after the publishing scenarios: "
            + "; ".join(slower)
            + ". These plans walk `events_created_at_idx` newest first and filter, so a filter "
            "whose matches are not among the newest events (authors, a kind or a tag that the "
            "load test's recent events do not carry) reads every newer row before its LIMIT "
            "is met. The per-author/per-kind/tag indexes are not chosen for these shapes."
        )
    warmed = results.get("prewarm") or {}
    if warmed.get("blocks"):
        notes.append(
            f"After the fill, PostgreSQL's buffer cache was pre-warmed with pg_prewarm "
            f"({warmed['blocks']:,} blocks: the `events` table, then its indexes and the tag "
            f"index, {warmed['seconds']:g} s): a bulk COPY leaves the cache nearly empty, and a "
            "relay that has served reads for a while has its working set cached. Cold first reads "
            "cost 5-10 ms per query here (docs/PERFORMANCE-LOG.md); `relay-cluster up` keeps "
            "the cache warm across restarts with pg_prewarm's autoprewarm."
        )
    elif warmed.get("error"):
        notes.append(f"The buffer cache was not pre-warmed ({warmed['error']}).")
    warm = (results.get("query_warmup") or {}).get("latency_ms")
    if warm:
        notes.append(
            "Queries: the measured phases follow an unreported warm-up of "
            f"{plan.warmup_seconds:g} s at {plan.query_rate * 2:g} q/s on other values "
            "(fresh workers have cold code paths, no prepared statements and new database "
            f"sessions); that warm-up itself measured {_triple(warm)} ms (p50 / p95 / p99)."
        )
    if "delivery" in results:
        notes.append(
            f"Delivery: {plan.delivery_subscribers:,} subscribers in groups of "
            f"{plan.delivery_fanout}; each event carries one group's `t` tag, so every event "
            f"reaches {plan.delivery_fanout} subscribers ({plan.delivery_rate:g} ev/s → "
            f"{plan.delivery_rate * plan.delivery_fanout:,.0f} deliveries/s), subscribers spread "
            "over both instances so most deliveries cross Redis. The broadcast row sends every "
            "event to all subscribers instead (the worst case for fan-out)."
        )
    if "subscriptions" in results:
        notes.append(
            f"100,000 subscriptions = {plan.sub_connections:,} connections x "
            f"{plan.subs_per_connection} (the relay's default per-connection maximum), so "
            "the measuring subscribers still fit under nginx's connection limit. "
            "Held subscriptions are realistic shapes (follow lists of 1-20 authors, `#p` "
            "mentions, `#e` threads, rare kinds) on keys the live events never carry: each "
            "event is matched against the whole index but delivered only to the measuring "
            "subscribers."
        )
    if "paid" in results:
        notes.append(
            f"Paid events: {plan.channels_per_connection} channels per publishing connection, "
            "used in rotation (claim nonces must rise per channel, and the relay handles one "
            "socket's EVENTs concurrently, so back-to-back claims of one channel could "
            "overtake each other), claims signed with `cluster.payments.claims.payment_tag` "
            "ahead of time. Before the clock starts, one paid event per channel puts every "
            "channel state in the relay's cache (steady state; the cold lookups are in the "
            "raw results under paid.warmup). A `stale_nonce` refusal means two claims of one "
            "channel were committed out of order."
        )
    if "fill" in results:
        f = results["fill"]
        if f.get("reused"):
            notes.append("The stored events were reused from an earlier fill of this data dir.")
        else:
            notes.append(
                f"Fill: {f['count']:,} events signed (BIP-340, coincurve) and COPYed with the "
                f"columns `save_parameters` computes, {f.get('rate', 0):,} events/s, then "
                f"VACUUM ANALYZE; {f.get('fill_s', 0):g} s in total. Kinds: {f.get('kinds')}."
            )
    return notes


if __name__ == "__main__":
    sys.exit(main())
