"""Free ports, readiness polling and crash-proof process teardown shared by the service runners."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

_PROC = Path("/proc")


def free_port(host: str = "127.0.0.1") -> int:
    """Return a port the kernel just reported unused, so parallel test runs never share ports.

    The probe socket is closed before returning, so another process could grab the port in the
    meantime; start the server promptly and treat a bind failure as "pick another port".
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def client_host(bind_host: str) -> str:
    """Map a wildcard bind address to one a client can dial, since 0.0.0.0 is not a destination."""
    if bind_host in ("", "0.0.0.0", "*"):
        return "127.0.0.1"
    if bind_host == "::":
        return "::1"
    return bind_host


def url_host(host: str) -> str:
    """Bracket IPv6 literals so they survive being embedded in a URL authority."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Block until something accepts TCP connections on host:port, or raise TimeoutError.

    Servers are "started" long before they listen; callers need a bounded wait instead of a
    sleep so tests stay fast when things work and fail loudly when they do not.
    """
    target = client_host(host)
    deadline = time.monotonic() + timeout
    last_error: OSError | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                f"nothing accepted TCP connections on {target}:{port} within {timeout:g}s "
                f"(last error: {last_error})"
            )
        try:
            with socket.create_connection((target, port), timeout=min(1.0, remaining)):
                return
        except OSError as exc:
            last_error = exc
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


def _proc_stats() -> list[tuple[int, str, int, int]]:
    """Return (pid, state, ppid, pgrp) for every live process, read from /proc (Linux only)."""
    stats: list[tuple[int, str, int, int]] = []
    try:
        entries = list(_PROC.iterdir())
    except OSError:
        return stats
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue  # the process exited while we were scanning
        # The command name is parenthesised and may contain spaces; fields follow the last ")".
        fields = raw[raw.rfind(")") + 2 :].split()
        if len(fields) < 3:
            continue
        stats.append((int(entry.name), fields[0], int(fields[1]), int(fields[2])))
    return stats


def child_pids(pid: int) -> list[int]:
    """List live (non-zombie) children of pid, e.g. to see that nginx forked its workers."""
    return [p for p, state, ppid, _ in _proc_stats() if ppid == pid and state != "Z"]


def _group_alive(pgid: int) -> bool:
    """Tell whether any non-zombie process is still in process group pgid.

    Zombies are ignored on purpose: an orphan whose reaper is slow has already released its
    sockets and shared memory, which is all a restart on the same port/data dir needs.
    """
    if _PROC.is_dir():
        return any(pgrp == pgid and state != "Z" for _, state, _, pgrp in _proc_stats())
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, sig: int) -> None:
    """Signal a whole process group, ignoring a group that is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_group_gone(pgid: int, timeout: float) -> bool:
    """Wait (bounded) until every member of a process group has exited; True if they all did."""
    deadline = time.monotonic() + timeout
    while _group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def kill_group(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGKILL a server started with start_new_session=True, its workers included, and reap it.

    Killing only the leader would leave postgres backends or nginx workers alive and holding the
    listening socket or shared memory, so a fault test could not restart on the same port.
    """
    signal_group(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
    wait_group_gone(proc.pid, timeout)


def terminate(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    """Ask the session leader to shut down with sig, escalating to kill_group after timeout.

    Only the leader is signalled first because servers map signals to shutdown modes (postgres
    backends treat SIGINT as "cancel query"), so the leader must orchestrate its own children.
    """
    if proc.poll() is None:
        proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    kill_group(proc, timeout=min(timeout, 10.0) if timeout > 0 else 10.0)


def log_tail(path: Path | None, limit: int = 4000) -> str:
    """Return the end of a server log so start-up failures explain themselves in the exception."""
    if path is None:
        return ""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", errors="replace")
