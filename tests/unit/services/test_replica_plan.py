"""`up --replicas N` in the service plan: replicas right after the embedded primary, their URLs
in every instance's environment, and a clear refusal with an external database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.config import load_settings
from cluster.services.launcher import ClusterProcess
from cluster.services.local_cluster import LEDGER_PLACEHOLDER, LocalCluster
from cluster.services.relay_services import InstanceGroup
from cluster.services.replica import ReplicaService
from cluster.services.supervision import ClusterError


def cluster(tmp_path: Path, replicas: int, env: dict[str, str] | None = None) -> LocalCluster:
    settings = load_settings(env=env or {}, overrides={"dassie": LEDGER_PLACEHOLDER})
    return LocalCluster(settings, None, 1, 1, 18080, tmp_path / "data", replicas=replicas)


def test_replicas_start_after_the_primary_and_stop_before_it(tmp_path: Path) -> None:
    planned = cluster(tmp_path, 2).plan(None)
    names = [service.name for service in planned]
    assert names == ["postgres", "replica-1", "replica-2", "redis", "ledger", "instances"]
    postgres = planned[0]
    assert getattr(postgres, "replication", {}).get("wal_level") == "replica"


def test_no_replicas_by_default(tmp_path: Path) -> None:
    names = [service.name for service in cluster(tmp_path, 0).plan(None)]
    assert not any(name.startswith("replica") for name in names)


def test_replicas_need_the_embedded_database(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="replica_urls"):
        cluster(tmp_path, 1, env={"DATABASE_URL": "postgresql://db.example/relay"})


class Fixed:
    def __init__(self, url: str) -> None:
        self.url = url


def test_instances_get_the_replica_urls(tmp_path: Path) -> None:
    local = cluster(tmp_path, 1)
    local.plan(None)
    assert local.instances is not None
    group = local.instances
    assert [type(r) for r in group.replicas] == [ReplicaService]
    group.replicas = [Fixed("postgresql://postgres@127.0.0.1:7001/relay")]
    env = group.environment(18081)
    assert json.loads(env["RELAY_DATABASE__REPLICA_URLS"]) == [
        "postgresql://postgres@127.0.0.1:7001/relay"
    ]
    assert isinstance(group, InstanceGroup)


def test_the_launcher_passes_replicas_on(tmp_path: Path) -> None:
    assert "--replicas" not in ClusterProcess(tmp_path, port=1).command()
    command = ClusterProcess(tmp_path, port=1, replicas=2).command()
    assert command[command.index("--replicas") + 1] == "2"
