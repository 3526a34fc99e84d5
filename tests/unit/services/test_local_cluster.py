"""`up`'s list of services and its state files, without starting any process."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from cluster.config import load_settings
from cluster.services.backing import ExternalService, PostgresService
from cluster.services.local_cluster import LEDGER_PLACEHOLDER, LocalCluster
from cluster.services.port_plan import PortPlan
from cluster.services.state_file import mask_password, read_state, write_state
from cluster.services.supervision import ClusterError, ServiceRow


def cluster(tmp_path: Path, env: dict[str, str] | None = None) -> LocalCluster:
    settings = load_settings(env=env or {}, overrides={"dassie": LEDGER_PLACEHOLDER})
    return LocalCluster(settings, None, 2, 1, 18080, tmp_path / "data")


def test_the_services_start_in_dependency_order_with_nginx_last(tmp_path: Path) -> None:
    planned = cluster(tmp_path).plan(Path("/usr/sbin/nginx"))
    assert [service.name for service in planned] == [
        "postgres",
        "redis",
        "ledger",
        "instances",
        "nginx",
    ]
    assert isinstance(planned[0], PostgresService)


def test_without_nginx_the_public_url_is_the_first_instance(tmp_path: Path) -> None:
    local = cluster(tmp_path)
    planned = local.plan(None)
    assert [service.name for service in planned][-1] == "instances"
    assert local.instances is not None and local.instances.public_url is None


def test_configured_servers_are_external_and_masked(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "postgresql://relay:secret@db:5432/relay"}
    postgres = cluster(tmp_path, env).plan(None)[0]
    assert isinstance(postgres, ExternalService)
    assert postgres.children() == []
    assert postgres.describe() == [
        ServiceRow("postgres", None, "postgresql://relay:***@db:5432/relay", "(external)")
    ]


def test_a_second_up_refuses_the_data_dir_and_leaves_the_first_ones_state(
    tmp_path: Path,
) -> None:
    local = cluster(tmp_path)
    local.data_dir.mkdir(parents=True)
    owner = os.getppid()  # alive, and not us
    write_state(local.data_dir, owner=owner, ready=True, url="ws://x", rows=[])

    with pytest.raises(ClusterError, match=f"another `relay-cluster up` \\(pid {owner}\\)"):
        local.start()
    local.stop()

    state = read_state(local.data_dir)
    assert state is not None and state["pid"] == owner


def test_state_file_keys_are_the_ones_tools_read(tmp_path: Path) -> None:
    rows = [ServiceRow("redis", 42, "redis://127.0.0.1:1/0", "/logs/redis.log")]
    write_state(tmp_path, owner=7, ready=False, url="ws://127.0.0.1:8080", rows=rows)
    assert json.loads((tmp_path / "cluster.json").read_text()) == {
        "pid": 7,
        "ready": False,
        "url": None,  # only once ready
        "data_dir": str(tmp_path),
        "services": [
            {"name": "redis", "pid": 42, "url": "redis://127.0.0.1:1/0", "log": "/logs/redis.log"}
        ],
    }
    (tmp_path / "cluster.json").write_text("{half")
    assert read_state(tmp_path) is None


def test_mask_password_hides_only_the_password() -> None:
    assert mask_password("postgresql://u:pw@h:1/d") == "postgresql://u:***@h:1/d"
    assert mask_password("redis://h:6379/0") == "redis://h:6379/0"


def test_ports_are_reused_when_free_and_kept_off_the_instances(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        plan = PortPlan(tmp_path, 18080, instances=2)
        plan.remember("redis", taken)
        plan.remember("ledger", 18081)  # an instance's preferred port
        redis, ledger = plan.pick("redis"), plan.pick("ledger")
    assert redis != taken and ledger not in (18080, 18081, 18082)
    plan.remember("redis", redis)
    assert json.loads((tmp_path / "ports.json").read_text()) == {"redis": redis, "ledger": 18081}
    again = PortPlan(tmp_path, 18080, instances=2)
    assert again.pick("redis") == redis
