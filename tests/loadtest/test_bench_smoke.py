"""Fast checks that the load tools still run: tiny loads against real relay processes.

The performance targets themselves are checked by `python -m loadtest.bench`, not here.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from loadtest import generator
from loadtest.histograms import METRICS_TOKEN_ENV
from loadtest.launch import rate_limit_overrides
from loadtest.record import BenchResults
from loadtest.results import PublishResult
from loadtest.stats import LatencySummary
from tests.services import (
    LedgerProcess,
    RelayProcess,
    create_database,
    drop_database,
    unique_name,
)

REPO = Path(__file__).resolve().parents[2]
PAID_KIND, PRICE = 4242, 10
METRICS_TOKEN = secrets.token_hex(16)


def assert_sane(errors: dict[str, int], latency: LatencySummary) -> None:
    assert sum(errors.values()) == 0, errors
    assert latency.count > 0
    assert latency.p50 is not None and latency.p95 is not None
    assert latency.p99 is not None and latency.max is not None
    assert 0 < latency.p50 <= latency.p95 <= latency.p99 <= latency.max


async def test_generator_publish_delivery_query_hold(relay: RelayProcess) -> None:
    published = await generator.run_publish(
        relay.url, rate=40, duration=1.0, connections=2, sources=4, drain=5
    )
    assert_sane(published.errors, published.latency_ms)
    assert published.error_count == 0
    assert published.accepted == published.offered == 40
    assert published.achieved_rate > 0

    delivered = await generator.run_delivery(
        relay.url, rate=20, duration=1.0, subscribers=6, fanout=3, publishers=2, sources=4
    )
    assert_sane(delivered.errors, delivered.latency_ms)
    assert delivered.delivered == delivered.expected_deliveries == 20 * 3

    queried = await generator.run_query(
        relay.url, rate=20, duration=1.0, connections=2, sources=4, drain=5
    )
    assert_sane(queried.errors, queried.latency_ms)
    assert queried.answered == 20
    assert set(queried.by_shape) == set(generator.QUERY_SHAPES)

    held = await generator.run_hold(
        relay.url,
        connections=8,
        subs=3,
        hold=0.2,
        sources=4,
        live_rate=10,
        live_duration=1.0,
        live_subscribers=4,
        live_fanout=2,
    )
    assert held.error_count == 0, held.errors
    assert held.alive_at_end == held.opened == 8
    assert held.subscriptions == 24
    assert held.live is not None, held.live_failure
    assert_sane(held.live.errors, held.live.latency_ms)


def test_generator_cli_writes_json(relay: RelayProcess, tmp_path: Path) -> None:
    out = tmp_path / "publish.json"
    completed = subprocess.run(
        [sys.executable, "-m", "loadtest.generator", "publish", "--url", relay.url,
         "--rate", "30", "--duration", "1", "--connections", "2", "--sources", "2",
         "--json-out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    result = msgspec.json.decode(out.read_bytes(), type=PublishResult)
    assert_sane(result.errors, result.latency_ms)
    assert result.accepted == 30
    assert json.loads(out.read_text())["scenario"] == "publish"


def test_generator_refuses_other_hosts() -> None:
    with pytest.raises(generator.LoadTestError, match="loopback"):
        generator.require_loopback("ws://192.0.2.1:8080")


def test_locustfile_runs_headless(relay: RelayProcess, tmp_path: Path) -> None:
    prefix = tmp_path / "locust"
    env = {**os.environ, "LOCUST_IDLE_SUBS": "2", "LOCUST_FREE_RATE": "5", "LOCUST_SOURCES": "4"}
    completed = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(REPO / "loadtest" / "locustfile.py"),
         "--headless", "-u", "5", "-r", "5", "--run-time", "3s", "--host", relay.url,
         "--csv", str(prefix), "--only-summary", "--stop-timeout", "2",
         "FreePublisher", "StampedPublisher", "DeliverySubscriber", "IdleHolder", "QueryUser"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    with Path(f"{prefix}_stats.csv").open() as handle:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(handle)}
    published = rows[("EVENT", "kind 1 (free)")]
    assert int(published["Request Count"]) > 0
    assert int(published["Failure Count"]) == 0
    assert int(rows[("", "Aggregated")]["Failure Count"]) == 0
    assert any(kind == "REQ" and int(row["Request Count"]) > 0 for (kind, _), row in rows.items())


@pytest.fixture(scope="module")
def paid_stack(
    postgres_server_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RelayProcess, LedgerProcess, str]]:
    """Its own database, a ledger and a one-worker relay pricing kind 4242: the bench fills it."""
    name = unique_name("relay_bench")
    database_url = create_database(postgres_server_url, name)
    logs = tmp_path_factory.mktemp("bench-stack")
    ledger = LedgerProcess(database_url, logs / "ledger.log", token=secrets.token_hex(24))
    relay: RelayProcess | None = None
    try:
        ledger.start()
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "RELAY_REDIS__KEY_PREFIX": unique_name("bench") + ":",
            "RELAY_PRICING": f"{PAID_KIND}:{PRICE}",
            "DASSIE_RPC_URL": ledger.url,
            "DASSIE_RPC_TOKEN": ledger.token,
            # /metrics is never open: the bench sends this token (loadtest/histograms.py)
            METRICS_TOKEN_ENV: METRICS_TOKEN,
            **rate_limit_overrides(),
        }
        relay = RelayProcess(env, workers=1, log_path=logs / "relay.log")
        relay.start()
        yield relay, ledger, database_url
    finally:
        if relay is not None:
            relay.stop()
        ledger.stop()
        drop_database(postgres_server_url, name)


def test_bench_quick_writes_report_and_plot(
    paid_stack: tuple[RelayProcess, LedgerProcess, str], tmp_path: Path
) -> None:
    relay, ledger, database_url = paid_stack
    report, plot, raw = tmp_path / "PERF.md", tmp_path / "latency.png", tmp_path / "raw.json"
    completed = subprocess.run(
        [sys.executable, "-m", "loadtest.bench", "--quick", "--url", relay.url,
         "--database-url", database_url, "--ledger-url", ledger.url,
         "--ledger-token", ledger.token, "--paid-kind", str(PAID_KIND), "--paid-price",
         str(PRICE), "--fill", "500", "--connections", "20", "--sub-connections", "20",
         "--skip", "broadcast,locust,profile", "--skip-features",  # test_bench_features.py
         "--output", str(report), "--plot", str(plot),
         "--results-json", str(raw)],
        cwd=REPO, capture_output=True, text=True, timeout=110, check=False,
        env={**os.environ, METRICS_TOKEN_ENV: METRICS_TOKEN},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    results = msgspec.json.decode(raw.read_bytes(), type=BenchResults)
    assert results.accept and results.paid and results.delivery and results.query
    for name, result in (("accept", results.accept), ("paid", results.paid),
                         ("delivery", results.delivery), ("query", results.query)):  # fmt: skip
        assert result.error_count == 0, (name, result.errors)
    assert results.sweep is not None
    assert all(step.error_count == 0 for step in results.sweep.steps)
    assert results.paid.accepted == results.paid.offered
    assert results.sustained is not None and results.sustained.error_count == 0
    assert results.peak is not None and results.peak.accepted == results.peak.offered
    soaked = results.soak
    assert soaked is not None and len(soaked.windows) == 2 and soaked.error_count == 0
    assert all(w.relay_rss_mib is None for w in soaked.windows)  # --url: no process tree to read
    assert results.fill is not None and results.fill.count >= 500
    # (a 500-event table may well be scanned sequentially: the full bench judges the plans)
    assert results.explain is not None and set(results.explain) == set(generator.QUERY_SHAPES)
    assert all(shape.execution_ms_median >= 0 for shape in results.explain.values())
    assert results.connections is not None and results.connections.alive_at_end == 20
    assert results.subscriptions is not None and results.subscriptions.subscriptions == 20 * 3
    live = results.subscriptions.live
    assert live is not None and live.error_count == 0, results.subscriptions.live_failure
    assert results.matching and results.machine_info is not None
    # Phases that were skipped are absent from the raw file, not null.
    assert "locust" not in json.loads(raw.read_text())
    text = report.read_text()
    assert "| Event acceptance, free kind (EVENT → OK)" in text
    assert "Payment verification" in text
    assert "| Sustained rate (EVENT → OK)" in text and "| Peak rate (EVENT → OK)" in text
    assert "## Soak (free kind, EVENT → OK, windows back to back)" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
