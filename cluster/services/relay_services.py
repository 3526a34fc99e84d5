"""The relay itself as `up` runs it: K `relay-cluster serve` instances, and nginx in front."""

from __future__ import annotations

import json
import os
import resource
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from cluster.services.backing import (
    Endpoint,
    LedgerEndpoint,
    OwnedServer,
    stop_processes,
    wait_healthy,
)
from cluster.services.instance import HOST, InstanceProcess
from cluster.services.nginx import NginxServer
from cluster.services.nginx_config import (
    DEFAULT_RLIMIT_NOFILE,
    default_worker_user,
    write_nginx_config,
)
from cluster.services.port_plan import PortPlan
from cluster.services.supervision import ServiceRow, Supervised

# Two nginx workers: each proxied WebSocket costs a worker two descriptors, and where the hard
# descriptor limit is 20,000 (as in this sandbox) one worker tops out just below 10,000 clients.
NGINX_WORKERS = 2


def nginx_descriptor_limit() -> int:
    """What nginx's workers may raise their descriptor limit to: our own hard limit (an
    unprivileged process cannot go beyond it), capped at the template's default."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return DEFAULT_RLIMIT_NOFILE
    return max(1024, min(DEFAULT_RLIMIT_NOFILE, hard))


class InstanceGroup:
    """The relay instances, one service: they start together and drain in parallel on stop."""

    name = "instances"

    def __init__(
        self,
        count: int,
        workers: int,
        *,
        config: str | None,
        logs: Path,
        ports: PortPlan,
        database: Endpoint,
        redis: Endpoint,
        ledger: LedgerEndpoint,
        public_url: str | None,
        checkpoint: Callable[[], None],
        replicas: Sequence[Endpoint] = (),
    ) -> None:
        """`replicas`: read replicas `up` started; the instances get their URLs as
        database.replica_urls."""
        self.count = count
        self.replicas = list(replicas)
        self.workers = workers
        self.config = config
        self.logs = logs
        self.ports = ports
        self.database = database
        self.redis = redis
        self.ledger = ledger
        self.public_url = public_url
        """nginx's URL when it runs in front; each instance's own URL otherwise."""
        self.checkpoint = checkpoint
        self.processes: list[InstanceProcess] = []

    @property
    def url(self) -> str:
        """The first instance's: where to connect when there is no nginx."""
        return self.processes[0].url if self.processes else ""

    @property
    def instance_ports(self) -> list[int]:
        return [process.port for process in self.processes]

    def command(self, port: int) -> list[str]:
        config = ["--config", self.config] if self.config else []  # a top-level option
        serve = f"serve --host {HOST} --port {port} --workers {self.workers}".split()
        return [sys.executable, "-m", "cluster.cli", *config, *serve]

    def environment(self, port: int) -> dict[str, str]:
        replicas = (
            {"RELAY_DATABASE__REPLICA_URLS": json.dumps([r.url for r in self.replicas])}
            if self.replicas
            else {}
        )
        return {
            **os.environ,
            **replicas,
            "DATABASE_URL": self.database.url,
            "REDIS_URL": self.redis.url,
            "DASSIE_RPC_URL": self.ledger.url,
            "DASSIE_RPC_TOKEN": self.ledger.token,
            "RELAY_NETWORK__PUBLIC_URL": self.public_url or f"ws://{HOST}:{port}",
        }

    def start(self) -> None:
        for index, port in enumerate(self.ports.instance_ports(), start=1):
            process = InstanceProcess(
                f"instance-{index}",
                port,
                self.command(port),
                self.environment(port),
                self.logs / f"instance-{index}.log",
            )
            print(f"starting {process.name} on {HOST}:{port} ({self.workers} workers)", flush=True)
            self.processes.append(process)  # before start: a signal must not orphan it
            process.start()
        self.checkpoint()
        wait_healthy(self.processes)

    def stop(self) -> None:
        stop_processes(self.processes)

    def describe(self) -> list[ServiceRow]:
        return [ServiceRow(p.name, p.pid, p.url, str(p.log_path)) for p in self.processes]

    def children(self) -> list[Supervised]:
        return list(self.processes)


class NginxService(OwnedServer[NginxServer]):
    """nginx on the public port, sticky by client address, over the instances' ports."""

    name = "nginx"

    def __init__(
        self,
        binary: Path,
        data_dir: Path,
        logs: Path,
        port: int,
        instances: InstanceGroup,
        *,
        handshakes_per_second: int = 0,
        exempt: Sequence[str] = (),
    ) -> None:
        """`handshakes_per_second` and `exempt`: rate_limits.handshakes_per_second_per_ip and
        rate_limits.exempt, enforced by this nginx (cluster/services/nginx_config.py)."""
        self.handshakes_per_second = handshakes_per_second
        self.exempt = list(exempt)
        self.binary = binary
        self.prefix = data_dir / "nginx"
        self.logs = logs
        self.port = port
        self.instances = instances
        self.server: NginxServer | None = None

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    def start(self) -> None:
        conf = write_nginx_config(
            self.prefix / "nginx.conf",
            self.port,
            self.instances.instance_ports,
            self.prefix,
            listen_host=HOST,
            user=default_worker_user(),
            worker_processes=NGINX_WORKERS,
            rlimit_nofile=nginx_descriptor_limit(),
            handshakes_per_second=self.handshakes_per_second,
            exempt=self.exempt,
        )
        self.server = NginxServer(
            conf,
            self.prefix,
            listen=[(HOST, self.port)],
            log_path=self.logs / "nginx.log",
            binary=self.binary,
        )
        self.server.test_config()
        print(f"starting nginx on {HOST}:{self.port}", flush=True)
        self.server.start(timeout=30)

    def log_file(self, server: NginxServer) -> str:
        return str(self.prefix / "error.log")
