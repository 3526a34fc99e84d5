"""A short headless locust run for comparison, read back from locust's CSV statistics."""

from __future__ import annotations

import contextlib
import csv
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import psutil

from loadtest.files import read_channels, write_json
from loadtest.machine import OtherLoad
from loadtest.plan import Plan
from loadtest.progress import log
from loadtest.results import ScenarioResult
from loadtest.targets import Target

REPO = Path(__file__).resolve().parents[1]


class LocustRow(msgspec.Struct, kw_only=True):
    """One row of locust's `<prefix>_stats.csv` (milliseconds, as locust reports them)."""

    type: str
    name: str
    requests: int
    failures: int
    p50: float | None
    p95: float | None
    p99: float | None
    rps: float | None


class LocustResult(ScenarioResult, kw_only=True):
    exit_code: int | None
    users: dict[str, int]
    seconds: float
    rows: list[LocustRow]
    locust_cpu_percent_median: float
    locust_cpu_percent_max: float
    output_tail: list[str]


def _number(row: dict[str, str], key: str) -> float | None:
    value = row.get(key)
    if value is None or value in ("", "N/A"):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def read_locust_stats(path: Path) -> list[LocustRow]:
    if not path.exists():
        return []
    with path.open() as handle:
        return [
            LocustRow(
                type=row.get("Type", ""),
                name=row.get("Name", ""),
                requests=int(_number(row, "Request Count") or 0),
                failures=int(_number(row, "Failure Count") or 0),
                p50=_number(row, "50%"),
                p95=_number(row, "95%"),
                p99=_number(row, "99%"),
                rps=_number(row, "Requests/s"),
            )
            for row in csv.DictReader(handle)
        ]


def locust_environment(
    plan: Plan, work: Path, users: dict[str, int], channels: Path | None, manifest: Path | None
) -> dict[str, str]:
    """The LOCUST_* knobs of loadtest/locustfile.py for this plan."""
    presign = int(max(plan.locust_free_rate, plan.locust_paid_rate) * plan.locust_seconds * 1.2)
    env = {
        **os.environ,
        "LOCUST_FREEPUBLISHER_USERS": str(plan.locust_free_users),
        "LOCUST_FREE_RATE": str(plan.locust_free_rate),
        "LOCUST_PAIDPUBLISHER_USERS": str(users.get("PaidPublisher", 0)),
        "LOCUST_PAID_RATE": str(plan.locust_paid_rate),
        "LOCUST_QUERYUSER_USERS": str(plan.locust_query_users),
        "LOCUST_QUERY_RATE": str(plan.locust_query_rate),
        "LOCUST_PRESIGN": str(presign + 10),
        "LOCUST_SOURCES": "32",
    }
    if channels is not None:
        # The last channels are locust's own (the generator's paid run takes the first ones).
        data = read_channels(channels)
        own = work / "channels-locust.json"
        tail = data.channels[-plan.locust_paid_users :]
        write_json(own, msgspec.structs.replace(data, channels=tail))
        env["LOCUST_CHANNELS_FILE"] = str(own)
    if manifest is not None:
        env["LOCUST_MANIFEST"] = str(manifest)
    return env


def run_locust(
    target: Target, plan: Plan, work: Path, channels: Path | None, manifest: Path | None
) -> LocustResult:
    """A short headless locust run with FreePublisher, PaidPublisher and QueryUser."""
    users = {"FreePublisher": plan.locust_free_users, "QueryUser": plan.locust_query_users}
    if channels is not None and plan.locust_paid_users:
        users["PaidPublisher"] = plan.locust_paid_users
    total = sum(users.values())
    prefix = work / "locust"
    env = locust_environment(plan, work, users, channels, manifest)
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
                cpu_samples.append(float(ps.cpu_percent(None)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        output, _ = proc.communicate(timeout=plan.locust_seconds + 120)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    sampler.join(5)
    busy = sorted(cpu_samples[1:-1] or cpu_samples or [0.0])
    return LocustResult(
        scenario="locust",
        exit_code=proc.returncode,
        users=users,
        seconds=plan.locust_seconds,
        rows=read_locust_stats(Path(f"{prefix}_stats.csv")),
        locust_cpu_percent_median=busy[len(busy) // 2],
        locust_cpu_percent_max=busy[-1],
        output_tail=output.splitlines()[-15:],
        machine=load.result(),
    )
