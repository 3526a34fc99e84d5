"""`relay-cluster up` as a subprocess, for the tests and the bench: one launcher, one teardown.

`up` runs in its own session, so a Ctrl-C meant for the caller does not stop the cluster behind
its back, and a hung `up` can be killed as a group. Its output goes through a pipe drained by a
thread (a full pipe would block `up`); `wait_ready` waits for the `relay ready: <url>` line,
the same line people see.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from cluster.services.state_file import kill_listed_services, read_state

READY_PREFIX = "relay ready: "
TRANSCRIPT_LINES = 10_000
"""Lines of output kept in memory (`up` is quiet once ready; the log file keeps everything)."""
TAIL_LINES = 40
"""Lines of output quoted in errors."""

_REMOVED = frozenset({"DATABASE_URL", "REDIS_URL", "LEDGER_DATABASE_URL", "RELAY_CONFIG"})
_REMOVED_PREFIXES = ("RELAY_", "DASSIE_", "PROMETHEUS_")


class ClusterExited(RuntimeError):
    """`up` exited before it was ready; the message ends with its last lines of output."""

    def __init__(self, message: str, returncode: int | None) -> None:
        super().__init__(message)
        self.returncode = returncode


def clean_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ without DATABASE_URL, REDIS_URL, LEDGER_DATABASE_URL, RELAY_CONFIG and any
    RELAY_*, DASSIE_*, PROMETHEUS_* variable (so `up` starts its own services), plus extra.

    A caller's own settings (a test's RELAY_DATABASE__URL, a shell's DASSIE_RPC_URL) would
    otherwise point `up` at someone else's servers.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _REMOVED and not key.startswith(_REMOVED_PREFIXES)
    }
    env.update(extra or {})
    return env


def relay_cluster_command() -> list[str]:
    """This interpreter's `relay-cluster` script, as a user runs it, else the module."""
    script = Path(sys.executable).with_name("relay-cluster")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "cluster.cli"]


class ClusterProcess:
    """`relay-cluster up` as a subprocess in its own session; output drained by a thread."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int,
        instances: int = 2,
        workers: int = 1,
        replicas: int = 0,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        """Does not start yet. `env` adds variables over clean_environment(); output is also
        appended to `log_path` when given."""
        self.data_dir = Path(data_dir)
        self.port = port
        self.instances = instances
        self.workers = workers
        self.replicas = replicas
        self.env = dict(env or {})
        self.log_path = log_path
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._lines: deque[str] = deque(maxlen=TRANSCRIPT_LINES)
        self._changed = threading.Condition()
        self._ready_url: str | None = None
        self._eof = False

    def command(self) -> list[str]:
        return [
            *relay_cluster_command(),
            "up",
            "--instances",
            str(self.instances),
            "--workers",
            str(self.workers),
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *(["--replicas", str(self.replicas)] if self.replicas else []),
        ]

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError(f"`relay-cluster up` for {self.data_dir} was already started")
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=clean_environment(self.env),
            cwd=self.cwd,
            start_new_session=True,
        )
        assert self._proc.stdout is not None
        self._reader = threading.Thread(
            target=self._drain, args=(self._proc.stdout,), name="relay-cluster-up", daemon=True
        )
        self._reader.start()

    def _drain(self, stdout: IO[bytes]) -> None:
        log = self.log_path.open("ab") if self.log_path is not None else None
        try:
            for raw in stdout:
                if log is not None:
                    log.write(raw)
                    log.flush()
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                with self._changed:
                    self._lines.append(line)
                    if self._ready_url is None and line.startswith(READY_PREFIX):
                        self._ready_url = line.removeprefix(READY_PREFIX).strip()
                    self._changed.notify_all()
        finally:
            if log is not None:
                log.close()
            with self._changed:
                self._eof = True
                self._changed.notify_all()

    def wait_ready(self, timeout: float = 120.0) -> str:
        """The URL of the `relay ready: <url>` line; ClusterExited or TimeoutError otherwise."""
        proc = self._started()
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._ready_url is None and not self._eof:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"`relay-cluster up` printed no `{READY_PREFIX.strip()}` line within "
                        f"{timeout:g}s; it is still running (pid {proc.pid}). Last lines:\n"
                        f"{self.transcript(TAIL_LINES)}"
                    )
                self._changed.wait(remaining)
            if self._ready_url is not None:
                return self._ready_url
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)  # the pipe closes a moment before the exit status is known
        raise ClusterExited(
            f"`relay-cluster up` exited with code {proc.returncode} before it was ready. "
            f"Last lines:\n{self.transcript(TAIL_LINES)}",
            proc.returncode,
        )

    def state(self) -> dict[str, Any]:
        """cluster.json of this `up`; FileNotFoundError before it wrote one (or after it left)."""
        state = read_state(self.data_dir)
        if state is None:
            raise FileNotFoundError(f"no readable cluster.json in {self.data_dir}")
        return state

    def terminate(self, timeout: float = 40.0) -> int:
        """SIGTERM (`up` stops its services in reverse order) and wait for the exit code.

        After `timeout`, `up`'s process group and the services its state file names are
        SIGKILLed, and TimeoutError says so with the last lines of output.
        """
        proc = self._started()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill_everything(proc)
                raise TimeoutError(
                    f"`relay-cluster up` was still running {timeout:g}s after SIGTERM; killed "
                    f"it and its services. Last lines:\n{self.transcript(TAIL_LINES)}"
                ) from None
        self._close()
        return proc.returncode

    def kill(self) -> None:
        """Teardown: never leave `up` running. Tries terminate() first; safe to call twice."""
        if self._proc is None:
            return
        with contextlib.suppress(TimeoutError):
            self.terminate()

    def poll(self) -> int | None:
        return self._started().poll()

    def transcript(self, lines: int | None = None) -> str:
        """`up`'s output so far (the last `lines` lines when given)."""
        with self._changed:
            kept = list(self._lines)
        return "\n".join(kept[-lines:] if lines is not None else kept)

    @property
    def pid(self) -> int:
        return self._started().pid

    def _started(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("call start() first: `relay-cluster up` is not running")
        return self._proc

    def _kill_everything(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL `up` and its group, then what it started: those run in their own groups."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        state = read_state(self.data_dir)
        if state is not None and state.get("pid") == proc.pid:
            kill_listed_services(state, self.data_dir)
        self._close()

    def _close(self) -> None:
        """Let the reader finish the output, then close the pipe (never under a live reader)."""
        if self._reader is not None:
            self._reader.join(timeout=10)
            if self._reader.is_alive():
                return
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
