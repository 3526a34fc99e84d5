"""`relay-cluster up`: PostgreSQL, Redis, K relay instances and nginx on one machine, supervised.

Layout of the data dir (default `.data`):

    ports.json     ports of the embedded PostgreSQL, Redis and ledger, reused by the next `up`
    cluster.json   what runs where (URLs, pids) while the cluster is up; removed on exit
    postgres/      embedded PostgreSQL cluster (only when no database URL is configured)
    redis/         local redis-server working dir (only when no Redis URL is configured)
    ledger.token   the ledger node's bearer token (mode 0600; only when no DASSIE_RPC_URL)
    nginx/         rendered nginx.conf and nginx's prefix (pid, temp dirs, access/error logs)
    logs/          instance-<i>.log, postgres.log, redis.log, nginx.log (nginx's own stderr)

The services are one ordered list (`LocalCluster.plan`), started in order and stopped in
reverse on every exit path: Ctrl-C, SIGTERM, a start that fails half way. A crashed child is
restarted, at most RESTART_LIMIT times per RESTART_WINDOW seconds, after which the whole
cluster is stopped.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg

from cluster.config import Settings, load_settings
from cluster.services.backing import (
    ExternalService,
    LedgerService,
    PostgresService,
    RedisService,
)
from cluster.services.instance import HOST
from cluster.services.nginx import find_nginx
from cluster.services.port_plan import PortPlan, port_is_free
from cluster.services.relay_services import InstanceGroup, NginxService
from cluster.services.replica import PRIMARY_REPLICATION, ReplicaService
from cluster.services.state_file import reap_leftovers, remove_state, write_state
from cluster.services.supervision import ClusterError, Service, ServiceList

LEDGER_PLACEHOLDER = {"url": "ws://127.0.0.1/rpc", "token": "x" * 32}
POLL_INTERVAL = 0.5


class ShutdownRequested(BaseException):
    """Raised by the SIGINT/SIGTERM handler; BaseException so no `except Exception` eats it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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
        replicas: int = 0,
    ) -> None:
        if instances < 1 or workers < 1:
            raise ClusterError("--instances and --workers must be at least 1")
        if replicas < 0:
            raise ClusterError("--replicas must not be negative")
        if replicas and settings.database.url:
            raise ClusterError(
                "--replicas copies the embedded PostgreSQL; with your own database, list its "
                "replicas in database.replica_urls (RELAY_DATABASE__REPLICA_URLS) instead"
            )
        self.replica_count = replicas
        self.settings = settings
        self.config = str(Path(config).absolute()) if config else None
        self.instance_count = instances
        self.workers = workers
        self.port = port
        self.data_dir = data_dir.absolute()
        self.logs = self.data_dir / "logs"
        # Only a ledger named in the environment is external: settings always carry one.
        self.dassie_url = settings.dassie.url if os.environ.get("DASSIE_RPC_URL") else ""
        self.services = ServiceList([])
        self.instances: InstanceGroup | None = None
        self.nginx: NginxService | None = None
        self.ready = False
        self._owns_state = False

    # -- start ---------------------------------------------------------------------------------

    @property
    def public_url(self) -> str:
        if self.nginx is not None:
            return self.nginx.url
        return self.instances.url if self.instances is not None else ""

    def plan(self, nginx_binary: Path | None) -> list[Service]:
        """The services in start order; each one may use the ones before it."""
        ports = PortPlan(self.data_dir, self.port, self.instance_count)
        checkpoint = self.save_state
        replication = PRIMARY_REPLICATION if self.replica_count else None
        database: PostgresService | ExternalService = (
            ExternalService("postgres", self.settings.database.url)
            if self.settings.database.url
            else PostgresService(
                self.data_dir, self.logs, ports, checkpoint, replication=replication
            )
        )
        replicas = [
            ReplicaService(index, self.replica_count, self.data_dir, self.logs, ports, database)
            for index in range(1, self.replica_count + 1)
            if isinstance(database, PostgresService)
        ]
        redis: RedisService | ExternalService = (
            ExternalService("redis", self.settings.redis.url)
            if self.settings.redis.url
            else RedisService(self.data_dir, self.logs, ports)
        )
        ledger: LedgerService | ExternalService = (
            ExternalService("ledger", self.dassie_url, self.settings.dassie.token)
            if self.dassie_url
            else LedgerService(self.data_dir, self.logs, ports, database, checkpoint)
        )
        self.instances = InstanceGroup(
            self.instance_count,
            self.workers,
            config=self.config,
            logs=self.logs,
            ports=ports,
            database=database,
            redis=redis,
            ledger=ledger,
            public_url=f"ws://{HOST}:{self.port}" if nginx_binary is not None else None,
            checkpoint=checkpoint,
            replicas=replicas,
        )
        services: list[Service] = [database, *replicas, redis, ledger, self.instances]
        if nginx_binary is not None:
            limits = self.settings.rate_limits
            self.nginx = NginxService(
                nginx_binary, self.data_dir, self.logs, self.port, self.instances,
                handshakes_per_second=limits.handshakes_per_second_per_ip,
                exempt=limits.exempt,
            )  # fmt: skip
            services.append(self.nginx)
        return services

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        reap_leftovers(self.data_dir, os.getpid())
        self._owns_state = True
        nginx_binary = self._find_nginx()
        if nginx_binary is not None and not port_is_free(self.port):
            raise ClusterError(f"port {self.port} is already in use; choose another with --port")
        self.services = ServiceList(self.plan(nginx_binary), on_change=self.save_state)
        self.services.start()
        self.ready = True
        self.save_state()

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

    # -- state ---------------------------------------------------------------------------------

    def save_state(self) -> None:
        """cluster.json with what runs now; `ready` (and the public URL) once all started."""
        write_state(
            self.data_dir,
            owner=os.getpid(),
            ready=self.ready,
            url=self.public_url,
            rows=self.services.describe(),
        )

    def announce(self) -> None:
        """The summary table, then the `relay ready: <url>` line tools wait for."""
        header = ("service", "pid", "address", "log")
        table = [header] + [
            (row.name, str(row.pid or "-"), row.url, row.log) for row in self.services.describe()
        ]
        widths = [max(len(line[column]) for line in table) for column in range(3)]
        lines = [
            f"{name:<{widths[0]}}  {pid:>{widths[1]}}  {url:<{widths[2]}}  {log}"
            for name, pid, url, log in table
        ]
        if self.nginx is None:
            lines.append(f"(no nginx: connect to {self.public_url} directly)")
        print("\n".join(lines), flush=True)
        print(f"relay ready: {self.public_url}", flush=True)

    # -- supervise and stop --------------------------------------------------------------------

    def supervise(self) -> None:
        """Watch the children until a signal raises ShutdownRequested (or a child gives up)."""
        while True:
            time.sleep(POLL_INTERVAL)
            self.services.restart_exited()

    def stop(self) -> None:
        """Reverse order: nginx, instances (SIGTERM, 20 s, SIGKILL), ledger, redis, postgres."""
        self.services.stop()
        if self._owns_state:  # never the file of another `up` that refused us the data dir
            remove_state(self.data_dir)


def _raise_shutdown(signum: int, frame: FrameType | None) -> None:
    raise ShutdownRequested(signum)


def _note_signal(signum: int, frame: FrameType | None) -> None:
    print(f"{signal.Signals(signum).name}: already stopping", file=sys.stderr, flush=True)


def _set_handlers(handler: Callable[[int, FrameType | None], None]) -> dict[int, Any]:
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def run_local_cluster(
    config: str | None, instances: int, workers: int, port: int, data_dir: str, replicas: int = 0
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
        cluster = LocalCluster(
            settings, config, instances, workers, port, Path(data_dir), replicas=replicas
        )
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
