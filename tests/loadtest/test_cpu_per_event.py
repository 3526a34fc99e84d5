"""The CPU-per-event tool: grouping is right, and a tiny real run reports the relay's CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.cpu_per_event import group_of, spent
from tests.services import RelayProcess

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("name", "cmdline", "group"),
    [
        ("python", "/x/python -m cluster.cli serve --port 8081 --workers 2", "relay"),
        ("python", "/x/python -m cluster.cli ledger --port 9", "ledger"),
        ("postgres", "postgres: relay relay 127.0.0.1(5) idle", "postgres"),
        ("redis-server", "/usr/bin/redis-server 127.0.0.1:6379", "redis"),
        ("nginx", "nginx: worker process", "nginx"),
        ("python", "/x/python -m pytest", None),
    ],
)
def test_processes_are_grouped_by_role(name: str, cmdline: str, group: str | None) -> None:
    assert group_of(name, cmdline) == group


def test_spent_counts_new_processes_whole_and_subtracts_old_ones() -> None:
    before = {"relay": {1: 10.0}}
    after = {"relay": {1: 12.5, 2: 1.0}, "nginx": {3: 0.25}}
    assert spent(before, after) == {"relay": 3.5, "nginx": 0.25}


def test_a_tiny_run_reports_relay_cpu_per_event(relay: RelayProcess) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "loadtest.cpu_per_event", "--url", relay.url,
         "--rate", "40", "--duration", "1", "--connections", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    report = json.loads(run.stdout)
    assert report["events"] == 40
    assert report["cpu_s"]["relay"] > 0 and report["cpu_us_per_event"]["relay"] > 0
    assert report["cpu_s"]["generator"] > 0
