"""Run a local PostgreSQL server as a child process for `relay-cluster up` and for tests."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

from cluster.services.child import ChildServer
from cluster.services.ports import client_host, log_tail, terminate, url_host
from cluster.services.postgres_install import (
    chown_tree,
    ensure_binaries_usable,
    ensure_traversable,
    find_postgres_bin,
    service_user,
)

_STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
# sun_path is 108 bytes on Linux; postgres also needs room for the ".lock" suffix.
_MAX_SOCKET_PATH = 100


MIB = 1024 * 1024


def server_tuning(memory_bytes: int) -> dict[str, str]:
    """Settings for a server that holds a relay's events, sized to the machine's memory.

    PostgreSQL's defaults (128 MB of shared buffers, checkpoints every 1 GB of WAL) are meant
    for a shared laptop: with a million stored events the hot indexes no longer fit, and the
    frequent checkpoints (each followed by full-page writes) show up as latency spikes on
    writes. Durability is untouched: fsync and synchronous_commit stay on.
    """
    memory_mib = max(memory_bytes // MIB, 1024)
    shared_mib = min(max(memory_mib // 8, 128), 4096)
    return {
        "shared_buffers": f"{shared_mib}MB",
        "effective_cache_size": f"{max(memory_mib // 2, shared_mib)}MB",
        "wal_buffers": "16MB",
        "max_wal_size": "4GB",
        "min_wal_size": "512MB",
        "checkpoint_timeout": "15min",
        "checkpoint_completion_target": "0.9",
        "wal_compression": "on",
        "random_page_cost": "1.1",
        "autovacuum_vacuum_cost_limit": "1000",
    }


# pg_prewarm's autoprewarm worker records which pages are in shared_buffers (every 5 min and at
# shutdown) and loads them again at start: after a restart, queries find a warm cache instead of
# paying 5-10 ms per first read (measured on this machine: docs/PERFORMANCE-LOG.md).
AUTOPREWARM = {"shared_preload_libraries": "pg_prewarm", "pg_prewarm.autoprewarm": "on"}


def machine_memory() -> int:
    """Physical memory in bytes (Linux and most Unixes), or 1 GiB if it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1024 * MIB


class PostgresServer(ChildServer):
    """A postmaster owned by this Python process, started in its own session.

    The own session (start_new_session=True) keeps a terminal Ctrl-C from killing it behind our
    back and lets kill() take down every backend at once, like a crash would. As root, initdb and
    postgres run as the `postgres` user (or `relaycluster`); pg_hba trusts local and loopback
    connections only, which is all a development or test server needs.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int,
        host: str = "127.0.0.1",
        *,
        extra_settings: dict[str, str] | None = None,
        log_path: Path | None = None,
        bin_dir: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.host = host
        # fsync stays on unless the caller opts out: restart-after-kill tests rely on durability.
        self.extra_settings: dict[str, str] = dict(extra_settings or {})
        self.log_path = (
            Path(log_path).absolute() if log_path else self.data_dir.parent / "postgres.log"
        )
        self._bin_dir = bin_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None
        self._tmp_socket_dir: Path | None = None

    @property
    def bin_dir(self) -> Path:
        """Resolve binaries lazily so constructing a server never touches the filesystem."""
        if self._bin_dir is None:
            self._bin_dir = find_postgres_bin()
        return self._bin_dir

    def has_library(self, name: str) -> bool:
        """True when this server's installation ships the loadable module `name` (a contrib
        module such as pg_prewarm), so a setting that preloads it cannot stop it starting."""
        lib = self.bin_dir.parent / "lib"
        return any((folder / f"{name}.so").is_file() for folder in (lib, lib / "postgresql"))

    def url(self, dbname: str = "postgres") -> str:
        """Connection URL for the trust-authenticated `postgres` superuser over TCP."""
        return f"postgresql://postgres@{url_host(client_host(self.host))}:{self.port}/{dbname}"

    def start(self, timeout: float = 60) -> None:
        """Initialise the cluster if needed, launch the postmaster and wait until it accepts.

        After kill() the same data dir can be started again: postgres then runs crash recovery,
        which is exactly what the fault tests exercise, so readiness means "accepting", not
        merely "listening".
        """
        if self.is_running():
            raise RuntimeError(f"postgres on port {self.port} is already running")
        self.kill()  # reap a postmaster that died on its own, and any orphaned backends
        deadline = time.monotonic() + timeout
        user = service_user()
        bin_dir = self.bin_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if user is not None:
            ensure_binaries_usable(bin_dir)
            ensure_traversable(self.data_dir)
            if self.data_dir.stat().st_uid != user.pw_uid:
                chown_tree(self.data_dir, user.pw_uid, user.pw_gid)
        self.data_dir.chmod(0o700)  # postgres refuses group/world-accessible data dirs
        self._output = self.log_path.open("ab")
        try:
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb(bin_dir, user, deadline)
            self._launch(bin_dir, user)
            self._wait_ready(bin_dir, deadline, timeout)
        except BaseException:
            self.kill()
            raise

    @staticmethod
    def _run_as(user: pwd.struct_passwd | None) -> tuple[int | None, int | None, list[int] | None]:
        """(user, group, extra_groups) for Popen that drop root, supplementary groups included."""
        if user is None:
            return None, None, None
        return user.pw_uid, user.pw_gid, []

    def _run_tool(
        self,
        command: list[str],
        output: IO[bytes],
        user: pwd.struct_passwd | None,
        deadline: float,
        what: str,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a PostgreSQL tool (initdb, pg_basebackup) in the data dir as the service user,
        its output into `output`, bounded by `deadline` (a TimeoutError names the log)."""
        uid, gid, groups = self._run_as(user)
        try:
            return subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                timeout=max(1.0, deadline - time.monotonic()),
                check=False,
                user=uid,
                group=gid,
                extra_groups=groups,
            )
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{what} did not finish; see {self.log_path}") from None

    def _initdb(self, bin_dir: Path, user: pwd.struct_passwd | None, deadline: float) -> None:
        """Create the cluster; C locale so it works in minimal containers without locales."""
        assert self._output is not None
        cmd = [
            str(bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "--auth=trust",
            "-U",
            "postgres",
            "--encoding=UTF8",
            "--locale=C",
        ]
        result = self._run_tool(cmd, self._output, user, deadline, "initdb")
        if result.returncode != 0:
            self._output.flush()
            raise RuntimeError(
                f"initdb failed with exit code {result.returncode} for {self.data_dir}:\n"
                f"{log_tail(self.log_path)}"
            )

    def _socket_dir(self, user: pwd.struct_passwd | None) -> Path:
        """Use the data dir for the Unix socket unless its path is too long for sun_path."""
        if len(str(self.data_dir / f".s.PGSQL.{self.port}.lock")) <= _MAX_SOCKET_PATH:
            return self.data_dir
        sock_dir = Path(tempfile.mkdtemp(prefix="pgsock-", dir="/tmp"))
        if user is not None:
            os.chown(sock_dir, user.pw_uid, user.pw_gid)
        self._tmp_socket_dir = sock_dir
        return sock_dir

    def _launch(self, bin_dir: Path, user: pwd.struct_passwd | None) -> None:
        """Start the postmaster in the foreground (no pg_ctl) so we own and can reap it."""
        settings = {"listen_addresses": self.host, "max_connections": "300"}
        settings.update(self.extra_settings)
        cmd = [
            str(bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-k",
            str(self._socket_dir(user)),
        ]
        for key, value in settings.items():
            cmd += ["-c", f"{key}={value}"]
        uid, gid, groups = self._run_as(user)
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            start_new_session=True,
            user=uid,
            group=gid,
            extra_groups=groups,
        )

    def _accepting(self, bin_dir: Path) -> bool:
        """Ask pg_isready, which distinguishes "accepting" from "still recovering"."""
        isready = bin_dir / "pg_isready"
        cmd = [
            str(isready),
            "-q",
            "-h",
            client_host(self.host),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-t",
            "1",
        ]
        try:
            return (
                subprocess.run(cmd, stdin=subprocess.DEVNULL, timeout=5, check=False).returncode
                == 0
            )
        except subprocess.TimeoutExpired:
            return False

    def _wait_ready(self, bin_dir: Path, deadline: float, timeout: float) -> None:
        """Poll until ready, failing fast with the log tail if the postmaster exits."""
        assert self._proc is not None
        while True:
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"postgres exited with code {code} during start-up (port {self.port}, "
                    f"data dir {self.data_dir}):\n{log_tail(self.log_path)}"
                )
            if self._accepting(bin_dir):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"postgres on {self.host}:{self.port} did not accept connections within "
                    f"{timeout:g}s; see {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.1)

    def stop(self, mode: str = "fast", timeout: float = 30) -> None:
        """Shut down cleanly: smart waits for clients, fast aborts their transactions,
        immediate skips the checkpoint (recovery on next start). Escalates to SIGKILL."""
        if mode not in _STOP_SIGNALS:
            raise ValueError(f"mode must be one of {sorted(_STOP_SIGNALS)}, not {mode!r}")
        if self._proc is not None:
            terminate(self._proc, _STOP_SIGNALS[mode], timeout)
        self._release()

    def _release(self) -> None:
        """Forget the reaped process and close what start() opened."""
        super()._release()
        if self._tmp_socket_dir is not None:
            shutil.rmtree(self._tmp_socket_dir, ignore_errors=True)
            self._tmp_socket_dir = None

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"PostgresServer({str(self.data_dir)!r}, port={self.port}, {state})"
