"""Run a local, non-persistent redis-server as a child process for development and tests."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

from cluster.services.child import ChildServer
from cluster.services.ports import client_host, log_tail, terminate, url_host


def find_redis_server() -> Path:
    """Locate redis-server on PATH; the cluster only needs a stock build."""
    found = shutil.which("redis-server")
    if found is None:
        raise FileNotFoundError(
            "redis-server not found on PATH. Install it with "
            "`apt-get update && apt-get install -y redis-server`, or point REDIS_URL at an "
            "existing server."
        )
    return Path(found)


class RedisServer(ChildServer):
    """A redis-server owned by this process, with persistence off.

    The relay uses Redis as a bus and cache only, so nothing is saved: a kill() followed by
    start() on the same port gives an empty Redis, which is what fault tests want to model.
    Redis sets SO_REUSEADDR, so restarting on the same port right after a kill works.
    Without a data_dir, a private temporary directory holds the log and is removed by stop().
    """

    def __init__(
        self,
        port: int,
        data_dir: Path | None = None,
        host: str = "127.0.0.1",
        *,
        log_path: Path | None = None,
        binary: Path | None = None,
    ) -> None:
        self.port = port
        self.host = host
        self.data_dir = Path(data_dir).absolute() if data_dir is not None else None
        self._log_path = Path(log_path).absolute() if log_path is not None else None
        self._binary = binary
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None

    @property
    def log_path(self) -> Path | None:
        """Where the server logs; None until start() picked a directory."""
        if self._log_path is not None:
            return self._log_path
        work = self._work_dir(create=False)
        return work / "redis.log" if work is not None else None

    def _work_dir(self, *, create: bool) -> Path | None:
        """The --dir for redis: data_dir, or a temp dir kept across kill() for restarts."""
        if self.data_dir is not None:
            return self.data_dir
        if self._tmp is None and create:
            self._tmp = tempfile.TemporaryDirectory(prefix="relaycluster-redis-")
        return Path(self._tmp.name) if self._tmp is not None else None

    def url(self, db: int = 0) -> str:
        """redis:// URL for clients; wildcard bind addresses map to loopback."""
        return f"redis://{url_host(client_host(self.host))}:{self.port}/{db}"

    def start(self, timeout: float = 30) -> None:
        """Launch redis-server and wait until it answers PING, failing fast if it exits."""
        if self.is_running():
            raise RuntimeError(f"redis on port {self.port} is already running")
        self.kill()  # reap a server that died on its own
        binary = self._binary or find_redis_server()
        work = self._work_dir(create=True)
        assert work is not None
        work.mkdir(parents=True, exist_ok=True)
        log_path = self.log_path
        assert log_path is not None
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(binary),
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(work),
            "--logfile",
            str(log_path),
        ]
        # Errors printed before the logfile is opened (bad arguments) go to stdout/stderr.
        self._output = log_path.with_suffix(".stdout").open("ab")
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            cwd=work,
            start_new_session=True,
        )
        try:
            self._wait_ready(timeout, log_path)
        except BaseException:
            self.kill()
            raise

    def _ping(self) -> bool:
        """Speak just enough RESP to know the server is serving, not merely listening."""
        try:
            with socket.create_connection((client_host(self.host), self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _wait_ready(self, timeout: float, log_path: Path) -> None:
        """Poll PING until it answers or the deadline passes."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                details = log_tail(log_path) + log_tail(log_path.with_suffix(".stdout"))
                raise RuntimeError(
                    f"redis-server exited with code {code} during start-up on port "
                    f"{self.port}:\n{details}"
                )
            if self._ping():
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"redis on {self.host}:{self.port} did not answer PING within {timeout:g}s; "
                    f"see {log_path}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (no save is configured, so it exits at once), SIGKILL after timeout."""
        if self._proc is not None:
            terminate(self._proc, signal.SIGTERM, timeout)
        self._release()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"RedisServer(port={self.port}, host={self.host!r}, {state})"
