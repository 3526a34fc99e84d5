"""The machine the bench ran on: its facts for the report, and how busy it was per phase.

Everything runs on one machine (relay, PostgreSQL, Redis, nginx, the generator), so the report
says what else was using the cores: a phase measured while another job ran is not comparable.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import msgspec
import psutil
import psycopg
import redis

from loadtest.results import MachineLoad
from loadtest.targets import Target


class MachineInfo(msgspec.Struct, kw_only=True):
    cpu_model: str
    cores: int | None
    memory_gib: float
    kernel: str
    python: str
    aiohttp: str
    postgres: str
    redis: str
    nginx: str
    locust: str
    loadavg_at_start: list[float]
    nofile: list[int]
    commit_ms: list[float] | None = None  # median, p95 of one durable commit (durable_commit_ms)


class OtherLoad:
    """CPU seconds used by processes outside the bench's own process tree during a phase."""

    def __init__(self) -> None:
        self.ours = os.getpid()
        self.start = self._snapshot()
        self.t0 = time.monotonic()
        self.epoch0 = time.time()
        self.system0 = psutil.cpu_times()

    def _ours(self) -> set[int]:
        with contextlib.suppress(psutil.Error):
            me = psutil.Process(self.ours)
            return {self.ours, *(p.pid for p in me.children(recursive=True))}
        return {self.ours}

    def _snapshot(self) -> dict[int, tuple[float, float]]:
        ours = self._ours()
        snap = {}
        for proc in psutil.process_iter(["pid", "create_time", "cpu_times"]):
            info = proc.info
            if info["pid"] in ours or info["cpu_times"] is None:
                continue
            times = info["cpu_times"]
            snap[int(info["pid"])] = (float(info["create_time"]), times.user + times.system)
        return snap

    def result(self) -> MachineLoad:
        end = self._snapshot()
        wall = max(1e-9, time.monotonic() - self.t0)
        other = 0.0
        for pid, (created, cpu) in end.items():
            before = self.start.get(pid)
            if before and before[0] == created:
                other += cpu - before[1]
            elif created >= self.epoch0:
                other += cpu  # started during the phase
        system1 = psutil.cpu_times()
        busy = sum(
            getattr(system1, k) - getattr(self.system0, k)
            for k in ("user", "system", "nice", "irq", "softirq", "steal")
            if hasattr(system1, k)
        )
        return MachineLoad(
            other_cores=round(other / wall, 2),
            machine_busy_cores=round(float(busy) / wall, 2),
            wall_s=round(wall, 1),
        )


def _version(command: list[str], pattern: str = r"([\d.]+)") -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not found"
    match = re.search(pattern, result.stdout + result.stderr)
    return match.group(1) if match else (result.stdout + result.stderr).strip()[:60]


def _postgres_version(database_url: str | None) -> str:
    if database_url:
        with contextlib.suppress(Exception), psycopg.connect(database_url) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else "unknown"
    return "unknown"


COMMIT_PROBES = 200


def durable_commit_ms(database_url: str | None) -> list[float] | None:
    """Median and p95 wall time of a one-row INSERT with its durable COMMIT on the bench's
    PostgreSQL: the floor under every EVENT -> OK, set by the disk's flush latency (which
    moves with the host's other tenants), so a report's latencies can be read against it."""
    if not database_url:
        return None
    with contextlib.suppress(Exception), psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commit_probe (n integer)")
        times = []
        for n in range(COMMIT_PROBES):
            started = time.perf_counter()
            conn.execute("INSERT INTO bench_commit_probe VALUES (%s)", (n,), prepare=True)
            times.append((time.perf_counter() - started) * 1000)
        conn.execute("DROP TABLE bench_commit_probe")
        times.sort()
        return [round(times[len(times) // 2], 2), round(times[int(len(times) * 0.95)], 2)]
    return None


def _redis_version(redis_url: str | None) -> str:
    if redis_url:
        with contextlib.suppress(Exception):
            client = redis.Redis.from_url(redis_url)
            try:
                return str(client.info("server").get("redis_version"))
            finally:
                client.close()
    return _version(["redis-server", "--version"], r"v=([\d.]+)")


def machine_info(target: Target) -> MachineInfo:
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
    return MachineInfo(
        cpu_model=cpu_model,
        cores=os.cpu_count(),
        memory_gib=mem_gib,
        kernel=platform.release(),
        python=platform.python_version(),
        aiohttp=aiohttp.__version__,
        postgres=_postgres_version(target.database_url),
        redis=_redis_version(target.redis_url),
        nginx=_version(["nginx", "-v"], r"nginx/([\d.]+)"),
        locust=_version([sys.executable, "-m", "locust", "--version"], r"locust ([\d.]+)"),
        loadavg_at_start=[round(x, 2) for x in os.getloadavg()],
        nofile=list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        commit_ms=durable_commit_ms(target.database_url),
    )
