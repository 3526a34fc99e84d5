"""Run nginx in the foreground as a child process, in front of the relay workers."""

from __future__ import annotations

import functools
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from cluster.services.child import ChildServer
from cluster.services.ports import child_pids, client_host, log_tail, terminate

_INSTALL_HINT = "apt-get update && apt-get install -y nginx"


def find_nginx() -> Path:
    """Locate the nginx binary; /usr/sbin is often missing from non-root PATHs."""
    found = shutil.which("nginx")
    if found is not None:
        return Path(found)
    fallback = Path("/usr/sbin/nginx")
    if fallback.is_file():
        return fallback
    raise FileNotFoundError(
        f"nginx not found on PATH or at /usr/sbin/nginx. Install it with `{_INSTALL_HINT}`."
    )


@functools.cache
def _supports_error_log_flag(binary: Path) -> bool:
    """nginx >= 1.19.5 accepts `-e`, which keeps start-up errors out of /var/log/nginx."""
    try:
        result = subprocess.run(
            [str(binary), "-v"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return False
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", result.stderr + result.stdout)
    if match is None:
        return False
    return tuple(int(part) for part in match.groups()) >= (1, 19, 5)


def _shutting_down(pid: int) -> bool:
    """True once an old worker has taken its QUIT: it retitles itself as it closes listeners.

    Old workers may linger for minutes draining websockets, so "gone" is too strong a test for
    "no longer accepting"; the process title is the cheap observable nginx gives us.
    """
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # already exited
    return b"shutting down" in title


class NginxServer(ChildServer):
    """An nginx master owned by this process (`-g 'daemon off;'`, own session).

    The config must not set `daemon` itself and should keep pid, temp and log paths inside the
    prefix so several instances can coexist. When we run as root, the master stays root and the
    workers switch to the config's `user` directive (nginx's default is `nobody`); choosing that
    user and giving it access to served files is the config author's business.

    start() considers nginx ready once every address in `listen` accepts TCP connections, or,
    when `listen` is empty, once the master has forked a worker (it binds sockets first). With
    `master_process off` pass `listen`, since there are no workers to observe.
    """

    def __init__(
        self,
        conf_path: Path,
        prefix_dir: Path,
        *,
        listen: Sequence[tuple[str, int]] = (),
        log_path: Path | None = None,
        binary: Path | None = None,
    ) -> None:
        self.conf_path = Path(conf_path).absolute()
        self.prefix_dir = Path(prefix_dir).absolute()
        self.listen = tuple(listen)
        # stdout/stderr of the master: early start-up errors land here, not in error_log.
        self.log_path = (
            Path(log_path).absolute() if log_path else self.prefix_dir / "nginx.stderr.log"
        )
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None

    @property
    def binary(self) -> Path:
        """Resolve the binary lazily so constructing a server never touches the filesystem."""
        if self._binary is None:
            self._binary = find_nginx()
        return self._binary

    def _base_cmd(self) -> list[str]:
        """Common arguments: our prefix and config, early errors to stderr when supported."""
        cmd = [str(self.binary), "-p", f"{self.prefix_dir}/", "-c", str(self.conf_path)]
        if _supports_error_log_flag(self.binary):
            cmd += ["-e", "stderr"]
        return cmd

    def test_config(self) -> None:
        """Run `nginx -t` so a bad config is reported with nginx's own message before use."""
        self.prefix_dir.mkdir(parents=True, exist_ok=True)
        try:
            result = subprocess.run(
                [*self._base_cmd(), "-t", "-q"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"`nginx -t` timed out for {self.conf_path}") from None
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip()
            raise RuntimeError(f"nginx config test failed for {self.conf_path}:\n{message}")

    def start(self, timeout: float = 30) -> None:
        """Launch the master in the foreground and wait until it serves (see class docstring)."""
        if self.is_running():
            raise RuntimeError(f"nginx for {self.conf_path} is already running")
        self.kill()  # reap a master that died on its own, and any orphaned workers
        self.prefix_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._output = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [*self._base_cmd(), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            cwd=self.prefix_dir,
            start_new_session=True,
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise

    def _listening(self) -> bool:
        """True when every expected address accepts a TCP connection."""
        for host, port in self.listen:
            try:
                with socket.create_connection((client_host(host), port), timeout=1):
                    pass
            except OSError:
                return False
        return True

    def _ready(self, pid: int) -> bool:
        """Readiness probe: expected ports if given, else a forked worker."""
        if self.listen:
            return self._listening()
        if not Path("/proc").is_dir():
            return True  # nothing better to observe; the exit check still catches failures
        return bool(child_pids(pid))

    def _wait_ready(self, timeout: float) -> None:
        """Poll until ready, failing fast with nginx's output if the master exits."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"nginx exited with code {code} during start-up ({self.conf_path}):\n"
                    f"{log_tail(self.log_path)}"
                )
            if self._ready(self._proc.pid):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"nginx ({self.conf_path}) was not ready within {timeout:g}s; "
                    f"see {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.05)

    def reload(self, timeout: float = 10) -> None:
        """Validate the config, SIGHUP the master and wait until only new workers accept.

        The config test first turns a typo into an exception instead of a silently ignored
        reload; waiting for fresh workers and for the old ones to stop accepting means the new
        config answers every request made after we return.
        """
        if self._proc is None or not self.is_running():
            raise RuntimeError("nginx is not running")
        self.test_config()
        old = set(child_pids(self._proc.pid))
        self._proc.send_signal(signal.SIGHUP)
        if not Path("/proc").is_dir():
            return
        deadline = time.monotonic() + timeout
        while True:
            current = set(child_pids(self._proc.pid))
            old_accepting = [pid for pid in current & old if not _shutting_down(pid)]
            if current - old and not old_accepting:
                return
            if self._proc.poll() is not None:
                raise RuntimeError(f"nginx exited during reload:\n{log_tail(self.log_path)}")
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"nginx did not switch to new workers within {timeout:g}s after reload; "
                    f"see its error_log and {self.log_path}"
                )
            time.sleep(0.02)

    def stop(self, graceful: bool = False, timeout: float = 10) -> None:
        """SIGTERM (fast) or SIGQUIT (let requests finish), escalating to SIGKILL after timeout."""
        if self._proc is not None:
            terminate(self._proc, signal.SIGQUIT if graceful else signal.SIGTERM, timeout)
        self._release()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"NginxServer({str(self.conf_path)!r}, {state})"
