"""The bench's "Sync, search, counts and import" section: `--only-features --quick` writes it
with every measurement (against the session's PostgreSQL and Redis), and the report shows what
ran and says what did not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec

from loadtest.bench_features import (
    FeaturesResult,
    ImportFigures,
    ImportRun,
    NegentropyFigures,
    NegentropyRow,
)
from loadtest.record import BenchResults
from loadtest.report_features import features_section

REPO = Path(__file__).resolve().parents[2]


def test_only_features_writes_the_section(
    postgres_server_url: str, redis_url: str, tmp_path: Path
) -> None:
    report, raw = tmp_path / "PERF.md", tmp_path / "raw.json"
    completed = subprocess.run(
        [sys.executable, "-m", "loadtest.bench", "--only-features", "--quick",
         "--output", str(report), "--results-json", str(raw)],
        cwd=REPO, capture_output=True, text=True, timeout=170, check=False,
        env={**os.environ, "BENCH_PG": postgres_server_url, "BENCH_REDIS": redis_url},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    found = msgspec.json.decode(raw.read_bytes(), type=BenchResults).features
    assert found is not None and found.failures == []
    assert found.negentropy and [row.size for row in found.negentropy.rows] == [1_000, 10_000]
    imported = found.imported
    assert imported is not None and imported.first.outcomes == {"stored": 5_000}
    assert "stored" not in imported.again.outcomes  # idempotent
    assert sum(imported.again.outcomes.values()) == 5_000
    counts = found.counts
    assert counts is not None and counts.events == 60_000
    searches = [row for row in counts.rows if row.shape.startswith("REQ search")]
    assert searches and all(row.answer.endswith("EOSE") for row in searches)  # not CLOSED
    assert any(row.answer.startswith("20 events") for row in searches)
    text = report.read_text()
    assert "## Sync, search, counts and import" in text
    assert "| 10,000 | 200 |" in text and "relay-cluster import" in text


def test_the_section_says_what_was_left_out() -> None:
    assert features_section(None) == []
    run = ImportRun(2.0, 50_000.0, 3.0, {"stored": 100_000}, [1.0, 1.0, 1.0])
    row = NegentropyRow(100_000, 2_000, 0.5, 0.2, 26, 1.6, 0.1, 2)
    result = FeaturesResult(
        negentropy=NegentropyFigures(rows=[row], predicted_s=75.0, wanted=1_000_000, budget_s=60),
        imported=ImportFigures(events=100_000, megabytes=41.8, command="c", first=run, again=run),
        failures=["counts: the relay did not become healthy"],
    )
    text = "\n".join(features_section(result))
    assert "The 1,000,000-item run was left out: the smaller one predicted 75 s" in text
    assert "| first | 2.0 | **50,000** |" in text
    assert "- failed: counts: the relay did not become healthy" in text
    assert "COUNT (NIP-45)" not in text
