"""cluster.json: what a running `up` started where, for `relay-cluster env`, tests and the bench.

Keys (read by cluster/cli.py `env`, tests/cluster and loadtest/): `pid` (of `up`), `ready`,
`url` (the public URL once ready), `data_dir`, and `services`: rows of `name`, `pid`, `url`,
`log`. The file also lets the next `up` kill what a SIGKILLed `up` left running.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cluster.services.instance import process_alive, wait_reaped
from cluster.services.ports import signal_group, wait_group_gone
from cluster.services.supervision import ClusterError, ServiceRow

STATE_FILE = "cluster.json"


def mask_password(url: str) -> str:
    """Hide the password of a URL before printing it or writing it to cluster.json."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def read_state(data_dir: Path) -> dict[str, Any] | None:
    """The parsed state file, or None when there is none (or half of one, or not an object)."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def write_state(
    data_dir: Path, *, owner: int, ready: bool, url: str | None, rows: Sequence[ServiceRow]
) -> None:
    """Write cluster.json atomically, so tools never read half a file."""
    state = {
        "pid": owner,
        "ready": ready,
        "url": url if ready else None,
        "data_dir": str(data_dir),
        "services": [row.as_json() for row in rows],
    }
    path = data_dir / STATE_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)


def remove_state(data_dir: Path) -> None:
    (data_dir / STATE_FILE).unlink(missing_ok=True)


def kill_listed_services(state: dict[str, Any], data_dir: Path) -> None:
    """SIGKILL every service process a state file names that still runs, with its group."""
    for row in state.get("services", []):
        pid = row.get("pid")
        # Our children lead their own process group; anything else is a reused pid.
        if isinstance(pid, int) and process_alive(pid) and os.getpgid(pid) == pid:
            print(f"stopping leftover {row.get('name')} (pid {pid})", flush=True)
            signal_group(pid, signal.SIGKILL)
            wait_group_gone(pid, 10)
            # The orphan's zombie lives until init reaps it, and postgres takes a zombie
            # named in postmaster.pid for a running postmaster.
            if not wait_reaped(pid, 10) and row.get("name") == "postgres":
                _remove_postgres_lock(data_dir / "postgres", pid)


def reap_leftovers(data_dir: Path, me: int) -> None:
    """Kill the children of an `up` that died without cleaning up (e.g. SIGKILL).

    Refuses (ClusterError) when the `up` that wrote the file is still running.
    """
    state = read_state(data_dir)
    if state is None:
        return
    owner = state.get("pid")
    if isinstance(owner, int) and owner != me and process_alive(owner):
        raise ClusterError(
            f"another `relay-cluster up` (pid {owner}) is using {data_dir}; stop it first"
        )
    kill_listed_services(state, data_dir)
    remove_state(data_dir)


def _remove_postgres_lock(postgres_dir: Path, dead_pid: int) -> None:
    lock = postgres_dir / "postmaster.pid"
    with contextlib.suppress(OSError, IndexError):
        if lock.read_text().splitlines()[0].strip() == str(dead_pid):
            print(f"removing stale {lock} (pid {dead_pid} is a zombie)", flush=True)
            lock.unlink()
