"""The services the relay instances depend on, as `up` runs them: PostgreSQL, Redis, the ledger.

Each is a `Service` (cluster/services/supervision.py). When the settings already name a server
(DATABASE_URL, REDIS_URL, DASSIE_RPC_URL), an `ExternalService` stands in its place: it shows
in the summary and cluster.json (password masked) and has nothing to start or stop.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from cluster.services.child import ChildServer
from cluster.services.instance import HOST, InstanceProcess
from cluster.services.port_plan import PortPlan
from cluster.services.postgres import AUTOPREWARM, PostgresServer, machine_memory, server_tuning
from cluster.services.redis import RedisServer
from cluster.services.state_file import mask_password
from cluster.services.supervision import ClusterError, ServiceRow, Supervised
from cluster.store.migrations import ensure_database

DATABASE_NAME = "relay"
HEALTH_TIMEOUT = 60.0
"""Seconds every instance (and the ledger) gets to answer /health with 200 after start."""
STOP_TIMEOUT = 20.0
"""Seconds an instance gets after SIGTERM (gunicorn drains its workers) before SIGKILL."""


class Endpoint(Protocol):
    """Where a service answers, for the services started after it."""

    @property
    def url(self) -> str: ...


class LedgerEndpoint(Endpoint, Protocol):
    @property
    def token(self) -> str: ...


class _Server(Protocol):
    def is_running(self) -> bool: ...

    def start(self) -> None: ...


class ServerChild:
    """A PostgresServer, RedisServer or NginxServer seen by the supervision loop."""

    def __init__(self, name: str, server: _Server) -> None:
        self.name = name
        self.server = server

    def is_running(self) -> bool:
        return self.server.is_running()

    def restart(self) -> None:
        self.server.start()

    def exit_detail(self) -> str:
        return ""  # its own log says why; the row in the summary names the file


S = TypeVar("S", bound=ChildServer)


class OwnedServer(Generic[S]):
    """A service that owns one local server process (PostgreSQL, Redis, nginx): stopping it,
    describing it and handing it to the supervision loop are the same for each."""

    name: str
    server: S | None = None

    @property
    def url(self) -> str:
        raise NotImplementedError

    def log_file(self, server: S) -> str:
        """Where an operator reads why the server stopped."""
        raise NotImplementedError

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def describe(self) -> list[ServiceRow]:
        if self.server is None:
            return []
        return [ServiceRow(self.name, self.server.pid, self.url, self.log_file(self.server))]

    def children(self) -> list[Supervised]:
        return [ServerChild(self.name, self.server)] if self.server is not None else []


def wait_healthy(processes: Sequence[InstanceProcess], timeout: float = HEALTH_TIMEOUT) -> None:
    """Until every process answers /health; ClusterError with the log tails otherwise."""
    deadline = time.monotonic() + timeout
    waiting = list(processes)
    while waiting:
        for process in list(waiting):
            if not process.is_running():
                raise ClusterError(
                    f"{process.name} exited with code {process.returncode} during start-up; "
                    f"{process.log_path}:\n{process.tail()}"
                )
            if process.healthy():
                waiting.remove(process)
        if waiting and time.monotonic() >= deadline:
            details = "\n".join(f"--- {p.log_path}:\n{p.tail()}" for p in waiting)
            names = ", ".join(p.name for p in waiting)
            raise ClusterError(f"{names} not healthy within {timeout:g}s:\n{details}")
        if waiting:
            time.sleep(0.2)


def stop_processes(processes: Sequence[InstanceProcess], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM them all first, so they drain in parallel within one deadline, then SIGKILL."""
    for process in processes:
        process.request_stop()
    deadline = time.monotonic() + timeout
    for process in processes:
        process.wait_stopped(deadline)


class ExternalService:
    """A server the settings point at: described, never started or stopped by us."""

    def __init__(self, name: str, url: str, token: str = "") -> None:
        self.name = name
        self.url = url
        self.token = token

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def describe(self) -> list[ServiceRow]:
        return [ServiceRow(self.name, None, mask_password(self.url), "(external)")]

    def children(self) -> list[Supervised]:
        return []


class PostgresService(OwnedServer[PostgresServer]):
    """The embedded PostgreSQL in <data>/postgres, tuned to the machine, database `relay`."""

    name = "postgres"

    def __init__(
        self,
        data_dir: Path,
        logs: Path,
        ports: PortPlan,
        checkpoint: Callable[[], None],
        *,
        replication: dict[str, str] | None = None,
    ) -> None:
        """`replication`: the settings replicas need (cluster/services/replica.py), if any."""
        self.data_dir = data_dir / "postgres"
        self.replication = dict(replication or {})
        self.logs = logs
        self.ports = ports
        self.checkpoint = checkpoint
        self.server: PostgresServer | None = None

    @property
    def url(self) -> str:
        return self.server.url(DATABASE_NAME) if self.server is not None else ""

    def log_file(self, server: PostgresServer) -> str:
        return str(server.log_path)

    def start(self) -> None:
        port = self.ports.pick(self.name)
        print(f"starting PostgreSQL on {HOST}:{port} (data in {self.data_dir})", flush=True)
        self.server = PostgresServer(
            self.data_dir,
            port,
            HOST,
            log_path=self.logs / "postgres.log",
            extra_settings=server_tuning(machine_memory()),
        )
        if self.server.has_library("pg_prewarm"):
            self.server.extra_settings.update(AUTOPREWARM)
        self.server.extra_settings.update(self.replication)
        self.server.start(timeout=120)
        self.checkpoint()
        asyncio.run(ensure_database(self.server.url("postgres"), DATABASE_NAME))
        self.ports.remember(self.name, port)


class RedisService(OwnedServer[RedisServer]):
    """A local redis-server without persistence, working dir <data>/redis."""

    name = "redis"

    def __init__(self, data_dir: Path, logs: Path, ports: PortPlan) -> None:
        self.data_dir = data_dir / "redis"
        self.logs = logs
        self.ports = ports
        self.server: RedisServer | None = None

    @property
    def url(self) -> str:
        return self.server.url() if self.server is not None else ""

    def log_file(self, server: RedisServer) -> str:
        return str(server.log_path)

    def start(self) -> None:
        port = self.ports.pick(self.name)
        print(f"starting Redis on {HOST}:{port}", flush=True)
        self.server = RedisServer(port, self.data_dir, HOST, log_path=self.logs / "redis.log")
        self.server.start(timeout=30)
        self.ports.remember(self.name, port)


class LedgerService:
    """`relay-cluster ledger` (the Dassie-compatible node) on the cluster's database."""

    name = "ledger"

    def __init__(
        self,
        data_dir: Path,
        logs: Path,
        ports: PortPlan,
        database: Endpoint,
        checkpoint: Callable[[], None],
    ) -> None:
        self.data_dir = data_dir
        self.logs = logs
        self.ports = ports
        self.database = database
        self.checkpoint = checkpoint
        self.process: InstanceProcess | None = None
        self.token = ""

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.process.port}/rpc" if self.process is not None else ""

    def _load_token(self) -> str:
        """A token kept in the data dir (0600), so a second `up` keeps talking to its ledger."""
        path = self.data_dir / "ledger.token"
        if path.exists():
            return path.read_text().strip()
        token = secrets.token_urlsafe(32)
        path.touch(mode=0o600)
        path.write_text(token + "\n")
        return token

    def start(self) -> None:
        port = self.ports.pick(self.name)
        print(f"starting the ledger node on {HOST}:{port}", flush=True)
        self.token = self._load_token()
        env = {**os.environ, "DATABASE_URL": self.database.url, "DASSIE_RPC_TOKEN": self.token}
        env.pop("LEDGER_DATABASE_URL", None)
        command = [sys.executable, "-m", "cluster.cli", "ledger", "--host", HOST]
        command += ["--port", str(port)]
        self.process = InstanceProcess(self.name, port, command, env, self.logs / "ledger.log")
        self.process.start()
        self.checkpoint()
        wait_healthy([self.process])
        self.ports.remember(self.name, port)

    def stop(self) -> None:
        if self.process is not None:
            stop_processes([self.process])

    def describe(self) -> list[ServiceRow]:
        if self.process is None:
            return []
        return [ServiceRow(self.name, self.process.pid, self.url, str(self.process.log_path))]

    def children(self) -> list[Supervised]:
        return [self.process] if self.process is not None else []
