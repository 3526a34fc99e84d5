"""`relay-cluster up`: PostgreSQL, Redis, K relay instances and nginx on one machine, supervised.

Layout of the data dir (default `.data`):

    ports.json     ports of the embedded PostgreSQL and Redis, reused by the next `up`
    cluster.json   what runs where (URLs, pids) while the cluster is up; removed on exit
    postgres/      embedded PostgreSQL cluster (only when no database URL is configured)
    redis/         local redis-server working dir (only when no Redis URL is configured)
    ledger.token   the ledger node's bearer token (mode 0600; only when no DASSIE_RPC_URL)
    nginx/         rendered nginx.conf and nginx's prefix (pid, temp dirs, access/error logs)
    logs/          instance-<i>.log, postgres.log, redis.log, nginx.log (nginx's own stderr)

Ctrl-C or SIGTERM stops everything in reverse order. A crashed child is restarted, at most
RESTART_LIMIT times per RESTART_WINDOW seconds, after which the whole cluster is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import psycopg

from cluster.config import Settings, load_settings
from cluster.services.nginx import NginxServer, find_nginx
from cluster.services.nginx_config import (
    DEFAULT_RLIMIT_NOFILE,
    default_worker_user,
    write_nginx_config,
)
from cluster.services.ports import (
    free_port,
    kill_group,
    log_tail,
    signal_group,
    wait_group_gone,
)
from cluster.services.postgres import (
    AUTOPREWARM,
    PostgresServer,
    machine_memory,
    server_tuning,
)
from cluster.services.redis import RedisServer
from cluster.store.migrations import ensure_database

HOST = "127.0.0.1"
LEDGER_PLACEHOLDER = {"url": "ws://127.0.0.1/rpc", "token": "x" * 32}
DATABASE_NAME = "relay"
HEALTH_TIMEOUT = 60.0
"""Seconds every instance gets to answer /health with 200 after start."""
STOP_TIMEOUT = 20.0
"""Seconds an instance gets after SIGTERM (gunicorn drains its workers) before SIGKILL."""
RESTART_LIMIT = 5
# Two nginx workers: each proxied WebSocket costs a worker two descriptors, and where the hard
# descriptor limit is 20,000 (as in this sandbox) one worker tops out just below 10,000 clients.
NGINX_WORKERS = 2
RESTART_WINDOW = 60.0
POLL_INTERVAL = 0.5


class ClusterError(RuntimeError):
    """The cluster cannot start or keep running; the message says why."""


class ShutdownRequested(BaseException):
    """Raised by the SIGINT/SIGTERM handler; BaseException so no `except Exception` eats it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Supervised(Protocol):
    """What the supervisor needs from a child: PostgresServer, RedisServer, NginxServer, ..."""

    def is_running(self) -> bool: ...

    def start(self) -> None: ...


@dataclass
class RestartBudget:
    """At most `limit` restarts within any `window` seconds."""

    limit: int = RESTART_LIMIT
    window: float = RESTART_WINDOW
    times: deque[float] = field(default_factory=deque)

    def allow(self) -> bool:
        now = time.monotonic()
        while self.times and now - self.times[0] > self.window:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return False
        self.times.append(now)
        return True


def nginx_descriptor_limit() -> int:
    """What nginx's workers may raise their descriptor limit to: our own hard limit (an
    unprivileged process cannot go beyond it), capped at the template's default."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return DEFAULT_RLIMIT_NOFILE
    return max(1024, min(DEFAULT_RLIMIT_NOFILE, hard))


def port_is_free(port: int, host: str = HOST) -> bool:
    """True when a server could bind host:port now (SO_REUSEADDR, like the servers we start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(preferred: int | None, taken: set[int]) -> int:
    """The preferred port when it is free, else a kernel-chosen one; recorded in `taken`."""
    port = preferred
    while port is None or port in taken or not (0 < port < 65536) or not port_is_free(port):
        port = free_port(HOST)
    taken.add(port)
    return port


def mask_password(url: str) -> str:
    """Hide the password of a URL before printing it or writing it to cluster.json."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def _process_state(pid: int) -> str | None:
    """The /proc state letter of pid ("Z" for a zombie), None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2]


def _alive(pid: int) -> bool:
    """Running and not a zombie (a zombie holds no port, lock or memory any more)."""
    return _process_state(pid) not in (None, "Z")


def _wait_reaped(pid: int, timeout: float) -> bool:
    """Wait until pid is gone entirely, zombie included; True if it was reaped in time."""
    deadline = time.monotonic() + timeout
    while _process_state(pid) is not None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


class InstanceProcess:
    """One `relay-cluster serve` (gunicorn master + workers) in its own process group."""

    def __init__(
        self,
        index: int,
        port: int,
        command: list[str],
        env: dict[str, str],
        log: Path,
        *,
        name: str | None = None,
    ) -> None:
        self.name = name or f"instance-{index}"
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


class LocalCluster:
    """The services of one `up`, started in dependency order and stopped in reverse."""

    def __init__(
        self,
        settings: Settings,
        config: str | None,
        instances: int,
        workers: int,
        port: int,
        data_dir: Path,
    ) -> None:
        if instances < 1 or workers < 1:
            raise ClusterError("--instances and --workers must be at least 1")
        self.config = str(Path(config).absolute()) if config else None
        self.instance_count = instances
        self.workers = workers
        self.port = port
        self.data_dir = data_dir.absolute()
        self.logs = self.data_dir / "logs"
        self.database_url = settings.database.url
        self.redis_url = settings.redis.url
        self.postgres: PostgresServer | None = None
        self.redis: RedisServer | None = None
        self.nginx: NginxServer | None = None
        self.dassie_url = settings.dassie.url if os.environ.get("DASSIE_RPC_URL") else ""
        self.dassie_token = settings.dassie.token
        self.ledger: InstanceProcess | None = None
        self.instances: list[InstanceProcess] = []
        self.budgets: defaultdict[str, RestartBudget] = defaultdict(RestartBudget)

    # -- start ---------------------------------------------------------------------------------

    @property
    def public_url(self) -> str:
        if self.nginx is not None:
            return f"ws://{HOST}:{self.port}"
        return self.instances[0].url

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self._reap_leftovers()
        nginx_binary = self._find_nginx()
        if nginx_binary is not None and not port_is_free(self.port):
            raise ClusterError(f"port {self.port} is already in use; choose another with --port")
        preferred = [self.port + i for i in range(1, 1 + self.instance_count)]
        taken = {self.port, *preferred}  # keep the instance ports away from postgres and redis
        saved = self._load_ports()
        if not self.database_url:
            self._start_postgres(pick_port(saved.get("postgres"), taken))
        if not self.redis_url:
            self._start_redis(pick_port(saved.get("redis"), taken))
        if not self.dassie_url:
            self._start_ledger(pick_port(saved.get("ledger"), taken))
        self._save_ports()
        taken -= set(preferred)
        ports = [pick_port(p, taken) for p in preferred]
        public = f"ws://{HOST}:{self.port}" if nginx_binary is not None else None
        self._start_instances(ports, public)
        self._wait_healthy()
        if nginx_binary is not None:
            self._start_nginx(nginx_binary, ports)
        self.save_state(ready=True)

    def _find_nginx(self) -> Path | None:
        try:
            return find_nginx()
        except FileNotFoundError:
            print(
                "warning: nginx is not installed, so there is no load balancer in front of the "
                "instances. Install it with `apt-get install -y nginx`; until then connect to "
                "the first instance's port directly (shown below).",
                file=sys.stderr,
                flush=True,
            )
            return None

    def _load_ports(self) -> dict[str, int]:
        path = self.data_dir / "ports.json"
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(raw, dict):
            return {}
        return {key: value for key, value in raw.items() if isinstance(value, int)}

    def _save_ports(self) -> None:
        ports = {
            "postgres": self.postgres.port if self.postgres else None,
            "redis": self.redis.port if self.redis else None,
            "ledger": self.ledger.port if self.ledger else None,
        }
        merged = {**self._load_ports(), **{k: v for k, v in ports.items() if v is not None}}
        (self.data_dir / "ports.json").write_text(json.dumps(merged, indent=2) + "\n")

    def _start_postgres(self, port: int) -> None:
        print(
            f"starting PostgreSQL on {HOST}:{port} (data in {self.data_dir / 'postgres'})",
            flush=True,
        )
        self.postgres = PostgresServer(
            self.data_dir / "postgres",
            port,
            HOST,
            log_path=self.logs / "postgres.log",
            extra_settings=server_tuning(machine_memory()),
        )
        if self.postgres.has_library("pg_prewarm"):
            self.postgres.extra_settings.update(AUTOPREWARM)
        self.postgres.start(timeout=120)
        self.save_state()
        asyncio.run(ensure_database(self.postgres.url("postgres"), DATABASE_NAME))
        self.database_url = self.postgres.url(DATABASE_NAME)

    def _start_redis(self, port: int) -> None:
        print(f"starting Redis on {HOST}:{port}", flush=True)
        self.redis = RedisServer(
            port, self.data_dir / "redis", HOST, log_path=self.logs / "redis.log"
        )
        self.redis.start(timeout=30)
        self.redis_url = self.redis.url()
        self.save_state()

    def _ledger_token(self) -> str:
        """A token kept in the data dir (0600), so a second `up` keeps talking to its ledger."""
        path = self.data_dir / "ledger.token"
        if path.exists():
            return path.read_text().strip()
        token = secrets.token_urlsafe(32)
        path.touch(mode=0o600)
        path.write_text(token + "\n")
        return token

    def _start_ledger(self, port: int) -> None:
        print(f"starting the ledger node on {HOST}:{port}", flush=True)
        self.dassie_token = self._ledger_token()
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "DASSIE_RPC_TOKEN": self.dassie_token,
        }
        env.pop("LEDGER_DATABASE_URL", None)
        command = [
            sys.executable,
            "-m",
            "cluster.cli",
            "ledger",
            "--host",
            HOST,
            "--port",
            str(port),
        ]
        self.ledger = InstanceProcess(
            0, port, command, env, self.logs / "ledger.log", name="ledger"
        )
        self.ledger.start()
        self.dassie_url = f"ws://{HOST}:{port}/rpc"
        deadline = time.monotonic() + HEALTH_TIMEOUT
        while not self.ledger.healthy():
            if not self.ledger.is_running() or time.monotonic() > deadline:
                raise ClusterError(f"the ledger did not start:\n{self.ledger.tail()}")
            time.sleep(0.2)
        self.save_state()

    def _instance_command(self, port: int) -> list[str]:
        config = ["--config", self.config] if self.config else []  # a top-level option
        serve = f"serve --host {HOST} --port {port} --workers {self.workers}".split()
        return [sys.executable, "-m", "cluster.cli", *config, *serve]

    def _start_instances(self, ports: list[int], public_url: str | None) -> None:
        for index, port in enumerate(ports, start=1):
            env = {
                **os.environ,
                "DATABASE_URL": self.database_url,
                "REDIS_URL": self.redis_url,
                "DASSIE_RPC_URL": self.dassie_url,
                "DASSIE_RPC_TOKEN": self.dassie_token,
                "RELAY_NETWORK__PUBLIC_URL": public_url or f"ws://{HOST}:{port}",
            }
            instance = InstanceProcess(
                index, port, self._instance_command(port), env, self.logs / f"instance-{index}.log"
            )
            print(f"starting {instance.name} on {HOST}:{port} ({self.workers} workers)", flush=True)
            self.instances.append(instance)  # before start: a signal must not orphan it
            instance.start()
        self.save_state()

    def _wait_healthy(self, timeout: float = HEALTH_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(self.instances)
        while waiting:
            for instance in list(waiting):
                if not instance.is_running():
                    raise ClusterError(
                        f"{instance.name} exited with code {instance.returncode} during start-up; "
                        f"{instance.log_path}:\n{instance.tail()}"
                    )
                if instance.healthy():
                    waiting.remove(instance)
            if waiting and time.monotonic() >= deadline:
                details = "\n".join(f"--- {i.log_path}:\n{i.tail()}" for i in waiting)
                names = ", ".join(i.name for i in waiting)
                raise ClusterError(f"{names} not healthy within {timeout:g}s:\n{details}")
            if waiting:
                time.sleep(0.2)

    def _start_nginx(self, binary: Path, ports: list[int]) -> None:
        prefix = self.data_dir / "nginx"
        conf = write_nginx_config(
            prefix / "nginx.conf",
            self.port,
            ports,
            prefix,
            listen_host=HOST,
            user=default_worker_user(),
            worker_processes=NGINX_WORKERS,
            rlimit_nofile=nginx_descriptor_limit(),
        )
        self.nginx = NginxServer(
            conf,
            prefix,
            listen=[(HOST, self.port)],
            log_path=self.logs / "nginx.log",
            binary=binary,
        )
        self.nginx.test_config()
        print(f"starting nginx on {HOST}:{self.port}", flush=True)
        self.nginx.start(timeout=30)

    # -- state ---------------------------------------------------------------------------------

    def _rows(self) -> Iterator[dict[str, Any]]:
        """One row per service, in start order: name, pid, url, log."""

        def row(name: str, pid: int | None, url: str, log: object) -> dict[str, Any]:
            return {"name": name, "pid": pid, "url": url, "log": str(log)}

        if self.postgres is not None:
            yield row("postgres", self.postgres.pid, self.database_url, self.postgres.log_path)
        else:
            yield row("postgres", None, mask_password(self.database_url), "(external)")
        if self.redis is not None:
            yield row("redis", self.redis.pid, self.redis_url, self.redis.log_path)
        else:
            yield row("redis", None, mask_password(self.redis_url), "(external)")
        if self.ledger is not None:
            yield row("ledger", self.ledger.pid, self.dassie_url, self.ledger.log_path)
        else:
            yield row("ledger", None, mask_password(self.dassie_url), "(external)")
        for instance in self.instances:
            yield row(instance.name, instance.pid, instance.url, instance.log_path)
        if self.nginx is not None:
            url = f"ws://{HOST}:{self.port}"
            yield row("nginx", self.nginx.pid, url, self.nginx.prefix_dir / "error.log")

    def save_state(self, *, ready: bool = False) -> None:
        """Write cluster.json atomically, so tools never read half a file."""
        state = {
            "pid": os.getpid(),
            "ready": ready,
            "url": self.public_url if ready else None,
            "data_dir": str(self.data_dir),
            "services": list(self._rows()),
        }
        path = self.data_dir / "cluster.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, path)

    def _reap_leftovers(self) -> None:
        """Kill the children of an `up` that died without cleaning up (e.g. SIGKILL)."""
        path = self.data_dir / "cluster.json"
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        owner = state.get("pid")
        if isinstance(owner, int) and owner != os.getpid() and _alive(owner):
            raise ClusterError(
                f"another `relay-cluster up` (pid {owner}) is using {self.data_dir}; stop it first"
            )
        for row in state.get("services", []):
            pid = row.get("pid")
            # Our children lead their own process group; anything else is a reused pid.
            if isinstance(pid, int) and _alive(pid) and os.getpgid(pid) == pid:
                print(f"stopping leftover {row.get('name')} (pid {pid})", flush=True)
                signal_group(pid, signal.SIGKILL)
                wait_group_gone(pid, 10)
                # The orphan's zombie lives until init reaps it, and postgres takes a zombie
                # named in postmaster.pid for a running postmaster.
                if not _wait_reaped(pid, 10) and row.get("name") == "postgres":
                    self._remove_postgres_lock(pid)
        path.unlink(missing_ok=True)

    def _remove_postgres_lock(self, dead_pid: int) -> None:
        lock = self.data_dir / "postgres" / "postmaster.pid"
        with contextlib.suppress(OSError, IndexError):
            if lock.read_text().splitlines()[0].strip() == str(dead_pid):
                print(f"removing stale {lock} (pid {dead_pid} is a zombie)", flush=True)
                lock.unlink()

    def announce(self) -> None:
        rows = list(self._rows())
        widths = [max(len(str(row[key])) for row in rows) for key in ("name", "pid", "url")]
        header = ("service", "pid", "address", "log")
        widths = [max(w, len(h)) for w, h in zip(widths, header, strict=False)]
        lines = [
            f"{header[0]:<{widths[0]}}  {header[1]:>{widths[1]}}  "
            f"{header[2]:<{widths[2]}}  {header[3]}"
        ]
        for row in rows:
            lines.append(
                f"{row['name']:<{widths[0]}}  {row['pid'] or '-'!s:>{widths[1]}}  "
                f"{row['url']:<{widths[2]}}  {row['log']}"
            )
        if self.nginx is None:
            lines.append(f"(no nginx: connect to {self.instances[0].url} directly)")
        print("\n".join(lines), flush=True)
        print(f"relay ready: {self.public_url}", flush=True)

    # -- supervise -----------------------------------------------------------------------------

    def _watched(self) -> list[tuple[str, Supervised]]:
        watched: list[tuple[str, Supervised]] = []
        if self.postgres is not None:
            watched.append(("postgres", self.postgres))
        if self.redis is not None:
            watched.append(("redis", self.redis))
        if self.ledger is not None:
            watched.append(("ledger", self.ledger))
        watched.extend((instance.name, instance) for instance in self.instances)
        if self.nginx is not None:
            watched.append(("nginx", self.nginx))
        return watched

    def check_children(self) -> None:
        """Restart any child that exited; give up (ClusterError) when it keeps crashing."""
        for name, child in self._watched():
            if child.is_running():
                continue
            if not self.budgets[name].allow():
                raise ClusterError(
                    f"{name} keeps exiting (restarted {RESTART_LIMIT} times within "
                    f"{RESTART_WINDOW:g}s); giving up"
                )
            detail = ""
            if isinstance(child, InstanceProcess):
                last = "\n".join(child.tail().splitlines()[-10:])
                detail = f" with code {child.returncode}; {child.log_path} ends with:\n{last}"
            print(
                f"{name} exited unexpectedly{detail}\nrestarting {name}",
                file=sys.stderr,
                flush=True,
            )
            child.start()
            self.save_state(ready=True)

    def supervise(self) -> None:
        """Watch the children until a signal raises ShutdownRequested (or a child gives up)."""
        while True:
            time.sleep(POLL_INTERVAL)
            self.check_children()

    # -- stop ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Reverse order: nginx, instances (SIGTERM, 20 s, SIGKILL), redis, postgres."""
        steps: list[tuple[str, Callable[[], None]]] = []
        if self.nginx is not None:
            steps.append(("nginx", self.nginx.stop))
        if self.instances:
            steps.append(("instances", self._stop_instances))
        if self.ledger is not None:
            ledger = self.ledger
            steps.append(("ledger", lambda: _stop_child(ledger)))
        if self.redis is not None:
            steps.append(("redis", self.redis.stop))
        if self.postgres is not None:
            steps.append(("postgres", self.postgres.stop))
        for name, step in steps:
            print(f"stopping {name}", flush=True)
            try:
                step()
            except Exception as exc:  # keep going: the remaining children must still stop
                print(f"error while stopping {name}: {exc}", file=sys.stderr, flush=True)
        (self.data_dir / "cluster.json").unlink(missing_ok=True)

    def _stop_instances(self) -> None:
        for instance in self.instances:
            instance.request_stop()
        deadline = time.monotonic() + STOP_TIMEOUT
        for instance in self.instances:
            instance.wait_stopped(deadline)


def _stop_child(child: InstanceProcess) -> None:
    child.request_stop()
    child.wait_stopped(time.monotonic() + STOP_TIMEOUT)


def _raise_shutdown(signum: int, frame: FrameType | None) -> None:
    raise ShutdownRequested(signum)


def _note_signal(signum: int, frame: FrameType | None) -> None:
    print(f"{signal.Signals(signum).name}: already stopping", file=sys.stderr, flush=True)


def _set_handlers(handler: Callable[[int, FrameType | None], None]) -> dict[int, Any]:
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def run_local_cluster(
    config: str | None, instances: int, workers: int, port: int, data_dir: str
) -> int:
    """Run the whole cluster in the foreground until SIGINT/SIGTERM; 0 on a clean stop.

    Must be called from the main thread (it installs signal handlers).
    """
    # Without DASSIE_RPC_URL, `up` starts its own ledger: validate as if it were set.
    local_node = {} if os.environ.get("DASSIE_RPC_URL") else {"dassie": LEDGER_PLACEHOLDER}
    settings = load_settings(config, overrides=local_node)
    previous = _set_handlers(_raise_shutdown)
    cluster: LocalCluster | None = None
    code = 0
    try:
        cluster = LocalCluster(settings, config, instances, workers, port, Path(data_dir))
        cluster.start()
        cluster.announce()
        cluster.supervise()
    except ShutdownRequested as exc:
        print(f"{exc}: stopping the cluster", flush=True)
    except (OSError, RuntimeError, ValueError, psycopg.Error) as exc:  # incl. ClusterError
        print(f"relay-cluster up: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        _set_handlers(_note_signal)
        try:
            if cluster is not None:
                cluster.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return code
