"""Streaming read replicas of a local PostgreSQL: `relay-cluster up --replicas N`, and tests.

A replica's data dir is a `pg_basebackup` of the primary (WAL streamed during the copy), kept
in recovery by `standby.signal` and following the primary over its replication connection
(`primary_conninfo`, given on the command line at every start so a primary on a new port is
followed too). pg_hba of the embedded primary is initdb's: trusted replication connections
from loopback, which is all a local standby needs.

A second `up` reuses a replica's data dir when it was copied from the same primary (its system
identifier is recorded next to it); a replica of another primary (the primary's data dir was
removed) is copied afresh.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import psycopg

from cluster.services.backing import DATABASE_NAME, OwnedServer, PostgresService
from cluster.services.instance import HOST
from cluster.services.port_plan import PortPlan
from cluster.services.ports import client_host, log_tail
from cluster.services.postgres import PostgresServer, machine_memory, server_tuning
from cluster.services.postgres_install import chown_tree, ensure_traversable, service_user

PRIMARY_REPLICATION = {
    "wal_level": "replica",
    "max_wal_senders": "16",
    "wal_keep_size": "1GB",
}
"""Settings of a primary that has replicas (wal_level=replica is PostgreSQL's default, but a
tuned or managed configuration may have lowered it); wal_keep_size lets a replica that was
stopped for a while catch up without a new base backup."""

STANDBY = {"hot_standby": "on", "hot_standby_feedback": "on"}
"""hot_standby_feedback: vacuum on the primary waits for queries running on the replica
instead of cancelling them ("conflict with recovery")."""


def primary_conninfo(primary: PostgresServer, name: str) -> str:
    return (
        f"host={client_host(primary.host)} port={primary.port} user=postgres "
        f"application_name={name}"
    )


def system_identifier(primary: PostgresServer) -> str:
    """The primary's cluster identity; RuntimeError if its WAL cannot feed a replica."""
    with psycopg.connect(primary.url(), autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT system_identifier::text, current_setting('wal_level'),"
            " current_setting('max_wal_senders')::int FROM pg_control_system()"
        ).fetchone()
    assert row is not None
    identifier, wal_level, senders = row
    if wal_level == "minimal" or senders < 1:
        raise RuntimeError(
            f"the primary on port {primary.port} cannot stream to replicas (wal_level="
            f"{wal_level}, max_wal_senders={senders}); start it with {PRIMARY_REPLICATION}"
        )
    return str(identifier)


class StandbyServer(PostgresServer):
    """A PostgresServer whose data dir is a base backup of `primary`, kept in recovery."""

    def __init__(
        self,
        primary: PostgresServer,
        data_dir: Path,
        port: int,
        host: str = "127.0.0.1",
        *,
        name: str = "replica",
        extra_settings: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        # A standby refuses to run with fewer WAL senders (and the like) than its primary.
        settings = {**PRIMARY_REPLICATION, **STANDBY, **(extra_settings or {})}
        settings["primary_conninfo"] = primary_conninfo(primary, name)
        super().__init__(
            data_dir, port, host, extra_settings=settings, log_path=log_path,
            bin_dir=primary.bin_dir,
        )  # fmt: skip
        self.primary = primary
        self.marker = self.data_dir.with_name(self.data_dir.name + ".primary")

    def start(self, timeout: float = 120) -> None:
        """Copy the primary first if this data dir is not a replica of it, then start."""
        deadline = time.monotonic() + timeout
        if not self.is_running():
            identifier = system_identifier(self.primary)
            copied = self.marker.read_text().strip() if self.marker.exists() else ""
            if copied != identifier or not (self.data_dir / "PG_VERSION").exists():
                self._base_backup(deadline)
                self.marker.write_text(identifier + "\n")
            (self.data_dir / "standby.signal").touch()
        super().start(timeout=max(1.0, deadline - time.monotonic()))

    def _base_backup(self, deadline: float) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir(parents=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        user = service_user()
        if user is not None:
            ensure_traversable(self.data_dir)
            chown_tree(self.data_dir, user.pw_uid, user.pw_gid)
        self.data_dir.chmod(0o700)
        command = [
            str(self.bin_dir / "pg_basebackup"),
            *("-h", client_host(self.primary.host), "-p", str(self.primary.port)),
            *("-U", "postgres", "-D", str(self.data_dir)),
            *("--wal-method=stream", "--checkpoint=fast", "--no-password"),
        ]
        with self.log_path.open("ab") as output:
            result = self._run_tool(command, output, user, deadline, "pg_basebackup")
        if result.returncode != 0:
            raise RuntimeError(
                f"pg_basebackup from port {self.primary.port} failed with exit code "
                f"{result.returncode}:\n{log_tail(self.log_path)}"
            )


class ReplicaService(OwnedServer[StandbyServer]):
    """`up --replicas N`: replica <index> of the embedded PostgreSQL, in <data>/replica-<index>."""

    def __init__(
        self,
        index: int,
        count: int,
        data_dir: Path,
        logs: Path,
        ports: PortPlan,
        primary: PostgresService,
    ) -> None:
        self.name = f"replica-{index}"
        self.count = count
        self.data_dir = data_dir / self.name
        self.logs = logs
        self.ports = ports
        self.primary = primary
        self.server: StandbyServer | None = None

    @property
    def url(self) -> str:
        return self.server.url(DATABASE_NAME) if self.server is not None else ""

    def start(self) -> None:
        primary = self.primary.server
        if primary is None:
            raise RuntimeError(f"{self.name}: the embedded PostgreSQL has not started")
        port = self.ports.pick(self.name)
        print(f"starting PostgreSQL {self.name} on {HOST}:{port} (streaming)", flush=True)
        # The primary and its replicas share the machine's memory.
        tuning = server_tuning(machine_memory() // (self.count + 1))
        self.server = StandbyServer(
            primary, self.data_dir, port, HOST, name=self.name,
            extra_settings=tuning, log_path=self.logs / f"{self.name}.log",
        )  # fmt: skip
        self.server.start(timeout=300)
        self.ports.remember(self.name, port)

    def log_file(self, server: StandbyServer) -> str:
        return str(server.log_path)
