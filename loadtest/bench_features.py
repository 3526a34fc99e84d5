"""The bench's "Sync, search, counts and import" section: the figures issue 14 asks for.

    .venv/bin/python -m loadtest.bench --only-features --output /tmp/PERFORMANCE.md

Three measurements, each on what it needs and nothing else, so the section costs a few
minutes and not a second cluster:
- NIP-77 reconciliation in memory (loadtest/bench_negentropy.py): two sets differing by 1%.
  The 100,000-item run goes first and predicts the million-item one (n log n); the million
  runs when the prediction is under `negentropy_budget_s`, else the section says it did not.
- COUNT (NIP-45) and search (NIP-50) round trips through one relay (loadtest/bench_counts.py)
  on events generated inside PostgreSQL, with search enabled (it is off by default).
- `relay-cluster import` of a signed JSON-lines file (loadtest/signed_jsonl.py) into an empty
  migrated database: the command itself, timed from outside, then again (every line a
  duplicate: what an idempotent re-run costs).
Databases are throwaway ones on a PostgreSQL started for the section and tuned as `up` tunes
the cluster's (loadtest/bench_services.py; BENCH_PG names another); Redis is the machine's
when it answers, else one of our own.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import psycopg

from cluster.store.migrations import apply_migrations
from loadtest import bench_counts, bench_negentropy
from loadtest.bench_services import bench_services
from loadtest.progress import log
from loadtest.signed_jsonl import write_signed_jsonl


class FeaturesPlan(msgspec.Struct, kw_only=True):
    negentropy_size: int = 1_000_000
    negentropy_fallback: int = 100_000
    negentropy_budget_s: float = 60.0
    count_events: int = 1_000_000
    """bench_counts' own default, the size of docs/SEARCH-AND-COUNT.md's figures (about two
    minutes here, most of it the fill and the index build)."""
    count_rounds: int = 100
    import_events: int = 100_000

    @classmethod
    def quick(cls) -> FeaturesPlan:
        # 60,000 generated events: bench_counts' first 50,000 are follow lists, then the rest.
        return cls(negentropy_size=10_000, negentropy_fallback=1_000, count_events=60_000,
                   count_rounds=5, import_events=5_000)  # fmt: skip


class NegentropyRow(msgspec.Struct):
    size: int
    differing: int
    build_s: float
    framed_s: float
    framed_rounds: int
    framed_mb: float
    unframed_s: float
    unframed_rounds: int


class NegentropyFigures(msgspec.Struct, kw_only=True):
    rows: list[NegentropyRow]
    predicted_s: float
    """What the fallback run predicted for `negentropy_size` (build + both exchanges)."""
    wanted: int
    budget_s: float


class CountRow(msgspec.Struct):
    shape: str
    cold_ms: float
    p50_ms: float
    p95_ms: float
    max_ms: float
    answer: str


class CountFigures(msgspec.Struct, kw_only=True):
    events: int
    rounds: int
    fill_s: float
    index_s: float
    rows: list[CountRow]


class ImportRun(msgspec.Struct):
    seconds: float
    events_per_s: float
    cpu_s: float
    """User + system CPU of the command and its verifying processes."""
    outcomes: dict[str, int]
    loadavg: list[float]


class ImportFigures(msgspec.Struct, kw_only=True):
    events: int
    megabytes: float
    command: str
    first: ImportRun
    again: ImportRun


class FeaturesResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    negentropy: NegentropyFigures | None = None
    counts: CountFigures | None = None
    imported: ImportFigures | None = None
    failures: list[str] = []
    elapsed_s: float = 0.0


# ---- the three measurements ---------------------------------------------------------------------


def _negentropy_row(size: int) -> NegentropyRow:
    row = bench_negentropy.bench(size, 60_000, seed=1)
    return NegentropyRow(
        row.size, 2 * (row.size // 100), round(row.build_seconds, 2),
        round(row.framed.seconds, 2), row.framed.rounds, round(row.framed.bytes / 1e6, 1),
        round(row.unframed.seconds, 2), row.unframed.rounds,
    )  # fmt: skip


def run_negentropy(plan: FeaturesPlan) -> NegentropyFigures:
    small = _negentropy_row(plan.negentropy_fallback)
    spent = small.build_s + small.framed_s + small.unframed_s
    ratio = plan.negentropy_size / plan.negentropy_fallback
    predicted = spent * ratio * math.log(plan.negentropy_size) / math.log(plan.negentropy_fallback)
    rows = [small]
    if predicted <= plan.negentropy_budget_s:
        rows.append(_negentropy_row(plan.negentropy_size))
    return NegentropyFigures(
        rows=rows,
        predicted_s=round(predicted, 1),
        wanted=plan.negentropy_size,
        budget_s=plan.negentropy_budget_s,
    )


def _figures(label: str, text: str) -> CountRow:
    """bench_counts' `cold | p50 | p95 | max | answer` cell text as numbers."""
    cold, p50, p95, most, answer = (part.strip() for part in text.split("|", 4))
    return CountRow(label, float(cold), float(p50), float(p95), float(most), answer)


def run_counts(server: str, redis_url: str, plan: FeaturesPlan) -> CountFigures:
    with throwaway_database(server, "bench_features_counts") as url:
        asyncio.run(apply_migrations(url))
        started = time.monotonic()
        index_s = bench_counts.fill(url, plan.count_events)
        fill_s = time.monotonic() - started
        rows = asyncio.run(bench_counts.measure(url, plan.count_rounds, redis_url))
    return CountFigures(events=plan.count_events, rounds=plan.count_rounds,
                        fill_s=round(fill_s, 1), index_s=round(index_s, 1),
                        rows=[_figures(label, text) for label, text in rows])  # fmt: skip


def _timed_import(url: str, source: Path) -> ImportRun:
    command = [str(Path(sys.executable).parent / "relay-cluster"), "import", str(source)]
    env = {**os.environ, "DATABASE_URL": url}
    loadavg = [round(x, 2) for x in os.getloadavg()]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True,
                          timeout=1800)  # fmt: skip
    seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    outcomes = msgspec.json.decode(done.stdout.strip().splitlines()[-1], type=dict[str, int])
    events = sum(outcomes.values())
    return ImportRun(round(seconds, 2), round(events / seconds), round(cpu, 2), outcomes, loadavg)


def run_import(server: str, work: Path, plan: FeaturesPlan) -> ImportFigures:
    source = work / "import.jsonl"
    size = write_signed_jsonl(source, plan.import_events)
    try:
        with throwaway_database(server, "bench_features_import") as url:
            asyncio.run(apply_migrations(url))
            first = _timed_import(url, source)
            again = _timed_import(url, source)
    finally:
        source.unlink(missing_ok=True)
    return ImportFigures(events=plan.import_events, megabytes=round(size / 1e6, 1),
                         command="relay-cluster import import.jsonl", first=first,
                         again=again)  # fmt: skip


# ---- where they run ----------------------------------------------------------------------------


@contextlib.contextmanager
def throwaway_database(server: str, stem: str) -> Iterator[str]:
    name = f"{stem}_{os.getpid()}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    try:
        yield server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def run_features(work: Path, plan: FeaturesPlan) -> FeaturesResult:
    """Every measurement; one that fails is named in `failures`, the others still run."""
    started = time.monotonic()
    result = FeaturesResult()
    work.mkdir(parents=True, exist_ok=True)
    log(f"features: negentropy {plan.negentropy_fallback:,} (then {plan.negentropy_size:,})")
    try:
        result.negentropy = run_negentropy(plan)
    except (AssertionError, MemoryError) as exc:
        result.failures.append(f"negentropy: {exc}")
    with bench_services(work) as (server, redis_url):
        log(f"features: import of {plan.import_events:,} signed events")
        try:
            result.imported = run_import(server, work, plan)
        except (subprocess.SubprocessError, OSError, psycopg.Error, msgspec.DecodeError) as exc:
            result.failures.append(f"import: {exc}")
        log(f"features: COUNT and search on {plan.count_events:,} generated events")
        try:
            result.counts = run_counts(server, redis_url, plan)
        except (RuntimeError, OSError, psycopg.Error, ValueError) as exc:
            result.failures.append(f"counts: {exc}")
    result.elapsed_s = round(time.monotonic() - started, 1)
    log(f"features: done in {result.elapsed_s:.0f} s")
    return result
