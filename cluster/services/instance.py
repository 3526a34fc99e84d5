"""One `relay-cluster` child of `up` (a relay instance or the ledger node) in its own group."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from cluster.services.ports import kill_group, log_tail

HOST = "127.0.0.1"


def process_state(pid: int) -> str | None:
    """The /proc state letter of pid ("Z" for a zombie), None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2]


def process_alive(pid: int) -> bool:
    """Running and not a zombie (a zombie holds no port, lock or memory any more)."""
    return process_state(pid) not in (None, "Z")


def wait_reaped(pid: int, timeout: float) -> bool:
    """Wait until pid is gone entirely, zombie included; True if it was reaped in time."""
    deadline = time.monotonic() + timeout
    while process_state(pid) is not None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


class InstanceProcess:
    """One `relay-cluster serve` (gunicorn master + workers) or `ledger`, own process group.

    The own group lets a restart or a stop take down workers a dead master left behind.
    """

    def __init__(
        self, name: str, port: int, command: list[str], env: dict[str, str], log: Path
    ) -> None:
        self.name = name
        self.port = port
        self.command = command
        self.env = env
        self.log_path = log
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.is_running() and self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self._proc is not None:
            kill_group(self._proc)  # reap the dead master and any workers it left behind
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )

    def restart(self) -> None:
        self.start()

    def exit_detail(self) -> str:
        last = "\n".join(self.tail().splitlines()[-10:])
        return f" with code {self.returncode}; {self.log_path} ends with:\n{last}"

    def healthy(self) -> bool:
        """GET /health answered 200 (PostgreSQL reachable from the instance)."""
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.port}/health", timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def request_stop(self) -> None:
        """SIGTERM the gunicorn master, which drains and stops its workers."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)

    def wait_stopped(self, deadline: float) -> None:
        """Wait for the master until `deadline` (monotonic), then SIGKILL the whole group."""
        if self._proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        kill_group(self._proc)
        self._proc = None

    def tail(self) -> str:
        return log_tail(self.log_path, limit=3000)
