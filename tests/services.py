"""Session-wide real services for tests: PostgreSQL, Redis and relay processes.

The machine's PostgreSQL/Redis are used when reachable (each test run gets its own database and
key prefix); otherwise throwaway servers are started. Nothing is skipped: a service that cannot
be reached or started fails the run with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import redis

from cluster.services.ports import free_port, kill_group, signal_group, terminate
from cluster.store.migrations import apply_migrations

LEDGER_TOKEN = secrets.token_hex(24)
"""The bearer token of every ledger node the tests start."""
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def record(test: str, **figures: Any) -> None:
    """Append a fault test's figures for docs/RELIABILITY.md (when RELIABILITY_LOG is set)."""
    path = os.environ.get("RELIABILITY_LOG")
    if path:
        with open(path, "a") as log:
            log.write(json.dumps({"test": test, **figures}, default=str) + "\n")


def postgres_reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def redis_reachable(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def unique_name(stem: str) -> str:
    return f"{stem}_{os.getpid()}_{secrets.token_hex(4)}"


def create_database(server_url: str, name: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class RelayProcess:
    """`relay-cluster serve` as a real subprocess (gunicorn master + aiohttp workers)."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        workers: int = 2,
        log_path: Path,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.workers = workers
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cluster.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"relay exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.http_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise TimeoutError(f"relay on {self.port} not healthy ({last}):\n{self.log_tail()}")

    def worker_pids(self, timeout: float = 20) -> list[int]:
        """The gunicorn workers' pids, once all of them have booted (bounded wait)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            out = subprocess.run(
                ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
            )
            pids = [int(pid) for pid in out.stdout.split()]
            if len(pids) >= self.workers or time.monotonic() > deadline:
                return pids
            time.sleep(0.1)

    def owners_of_client_ports(self) -> dict[int, int]:
        """{client port: worker pid} for established connections to this relay (via `ss`)."""
        out = subprocess.run(
            ["ss", "-Htnp", "state", "established", f"( sport = :{self.port} )"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        owners: dict[int, int] = {}
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 5 and "pid=" in fields[4]:
                client_port = int(fields[3].rsplit(":", 1)[1])
                owners[client_port] = int(fields[4].split("pid=", 1)[1].split(",", 1)[0])
        return owners

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self, timeout: float = 30) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(10)


class RelayStarter:
    """Starts relay processes with the session's environment plus overrides; stops them all."""

    def __init__(self, base_env: Mapping[str, str], directory: Path) -> None:
        self.base_env = dict(base_env)
        self.directory = directory
        self.started: list[RelayProcess] = []

    def start(self, *, workers: int = 2, **env: str) -> RelayProcess:
        merged = {
            **self.base_env,
            "RELAY_REDIS__KEY_PREFIX": unique_name("relay") + ":",
            **env,
        }
        log_path = self.directory / f"relay-{len(self.started)}.log"
        process = RelayProcess(merged, workers=workers, log_path=log_path)
        self.started.append(process)
        process.start()
        return process

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()


class LedgerProcess:
    """`python -m cluster.ledger` on a fixed port, so it can be killed and restarted there."""

    def __init__(self, database_url: str, log_path: Path, *, token: str) -> None:
        self.port = free_port()
        self.token = token
        self.log_path = log_path
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
            "DASSIE_RPC_TOKEN": token,
            "LEDGER_DATABASE_URL": database_url,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/rpc"

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cluster.ledger", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ledger exited with {self.process.returncode}:\n{self.log()}")
            try:
                url = f"http://127.0.0.1:{self.port}/health"
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"ledger not healthy within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        assert self.process is not None
        kill_group(self.process)

    def freeze(self) -> None:
        assert self.process is not None
        signal_group(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        signal_group(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process, signal.SIGTERM, 10.0)


@contextlib.contextmanager
def running_ledger(database_url: str, log_path: Path) -> Iterator[LedgerProcess]:
    """A ledger node on `database_url` (schema `ledger`) for the length of the block."""
    process = LedgerProcess(database_url, log_path, token=LEDGER_TOKEN)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@contextlib.asynccontextmanager
async def migrated_database(server_url: str, stem: str) -> AsyncIterator[str]:
    """A fresh database on the server, migrated, dropped when the block ends."""
    name = unique_name(stem)
    url = create_database(server_url, name)
    try:
        await apply_migrations(url)
        yield url
    finally:
        drop_database(server_url, name)
