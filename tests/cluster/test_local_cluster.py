"""`relay-cluster up` end to end: embedded PostgreSQL + Redis, two instances behind nginx,
a clean SIGTERM that leaves no process behind, and a second `up` on the same data dir."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from cluster.nostr.signing import Signer
from cluster.services.ports import free_port, wait_group_gone
from tests.client import connect

READY_TIMEOUT = 120.0
STOP_TIMEOUT = 40.0
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)


def relay_cluster_command() -> list[str]:
    """The installed `relay-cluster` script of this venv, else the module."""
    script = Path(sys.executable).with_name("relay-cluster")
    if script.is_file():
        return [str(script)]
    found = shutil.which("relay-cluster")
    return [found] if found else [sys.executable, "-m", "cluster.cli"]


def cluster_env() -> dict[str, str]:
    """Our environment without any database/Redis location, so `up` starts its own."""
    removed = {
        "DATABASE_URL",
        "REDIS_URL",
        "RELAY_CONFIG",
        "RELAY_DATABASE__URL",
        "RELAY_REDIS__URL",
    }
    return {key: value for key, value in os.environ.items() if key not in removed}


class UpProcess:
    """`relay-cluster up` as a subprocess whose output is drained by a thread (never blocks)."""

    def __init__(self, port: int, data_dir: Path) -> None:
        self.port = port
        self.data_dir = data_dir
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            [
                *relay_cluster_command(),
                "up",
                "--instances",
                "2",
                "--workers",
                "1",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=cluster_env(),
            text=True,
        )
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> str:
        """The URL of the `relay ready: <url>` line."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no `relay ready:` within {timeout:g}s:\n{self.transcript()}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"`up` exited before ready:\n{self.transcript()}")
            if line.startswith("relay ready: "):
                return line.removeprefix("relay ready: ").strip()

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads((self.data_dir / "cluster.json").read_text())
        return state

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"`up` still running {timeout:g}s after SIGTERM:\n{self.transcript()}"
            ) from None
        self.reader.join(timeout=10)
        return code

    def kill(self) -> None:
        """Test teardown: never leave `up` (or, via its cleanup, its children) running."""
        if self.proc.poll() is None:
            self.terminate()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def transcript(self) -> str:
        return "".join(self.output)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


async def req_until_eose(url: str, sub_id: str) -> list[Any]:
    """Raw aiohttp WebSocket: REQ with limit 1, messages until (and including) EOSE."""
    received: list[Any] = []
    async with (
        aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session,
        session.ws_connect(url) as ws,
    ):
        await ws.send_str(orjson.dumps(["REQ", sub_id, {"limit": 1}]).decode())
        while not received or received[-1][0] != "EOSE":
            received.append(orjson.loads(await ws.receive_str(timeout=10)))
    return received


async def get_health(port: int) -> int:
    async with (
        aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session,
        session.get(f"http://127.0.0.1:{port}/health") as response,
    ):
        await response.read()
        return response.status


def stop_and_check_nothing_left(up: UpProcess, pids: dict[str, int]) -> None:
    assert up.terminate() == 0, up.transcript()
    for name, pid in pids.items():
        # Each child leads its own process group: workers and backends must be gone too.
        assert wait_group_gone(pid, timeout=5), f"{name} (pid {pid}) group still alive"
        assert not alive(pid), f"{name} (pid {pid}) still alive"
    assert not (up.data_dir / "cluster.json").exists()


def child_pids(state: dict[str, Any]) -> dict[str, int]:
    return {row["name"]: row["pid"] for row in state["services"] if row["pid"] is not None}


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Outside pytest's tmp dir on purpose: as root, PostgreSQL runs as an unprivileged user
    that must traverse every ancestor, and any pytest run resets /tmp/pytest-of-<user> to 0700."""
    path = Path(tempfile.mkdtemp(prefix="relay-up-test-"))
    try:
        yield path / "data"
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(420)
async def test_up_serves_stops_cleanly_and_restarts_on_the_same_data(data_dir: Path) -> None:
    port = free_port()
    signer = Signer()

    up = UpProcess(port, data_dir)
    try:
        assert up.wait_ready() == f"ws://127.0.0.1:{port}"
        state = up.state()
        pids = child_pids(state)
        expected = {"postgres", "redis", "ledger", "nginx", "instance-1", "instance-2"}
        assert set(pids) == expected, state
        assert all(alive(pid) for pid in pids.values())
        first_postgres = next(row["url"] for row in state["services"] if row["name"] == "postgres")

        assert await get_health(port) == 200
        messages = await req_until_eose(f"ws://127.0.0.1:{port}", "s")
        assert messages[-1] == ["EOSE", "s"]

        event = signer.sign(1, "kept across restarts")
        async with connect(f"ws://127.0.0.1:{port}") as client:
            ok = await client.publish(event)
            assert ok[2] is True, ok

        stop_and_check_nothing_left(up, pids)
    finally:
        up.kill()

    # Second run: same data dir, so the same PostgreSQL data (and port) come back.
    up = UpProcess(port, data_dir)
    try:
        assert up.wait_ready() == f"ws://127.0.0.1:{port}"
        state = up.state()
        again = next(row["url"] for row in state["services"] if row["name"] == "postgres")
        assert again == first_postgres
        assert await get_health(port) == 200
        async with connect(f"ws://127.0.0.1:{port}") as client:
            stored = await client.query("q", {"ids": [event.id]})
            assert [e["id"] for e in stored] == [event.id]
        stop_and_check_nothing_left(up, child_pids(state))
    finally:
        up.kill()
