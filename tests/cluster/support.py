"""Shared helpers for cluster tests: `relay-cluster up` as a subprocess, its data dir."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

READY_TIMEOUT = 120.0
STOP_TIMEOUT = 40.0


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

    def __init__(
        self,
        port: int,
        data_dir: Path,
        *,
        extra_env: dict[str, str] | None = None,
        instances: int = 2,
    ) -> None:
        self.port = port
        self.data_dir = data_dir
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            [
                *relay_cluster_command(),
                "up",
                "--instances",
                str(instances),
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
            env={**cluster_env(), **(extra_env or {})},
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
