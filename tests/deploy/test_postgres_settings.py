"""One value per PostgreSQL setting: postgres/relay.conf is the source, and compose, the k8s
ConfigMap, the Akash SDL and the table in docs/DEPLOY.md must agree with it.

Why a test: the compose file once passed `max_wal_size` twice (4GB, then 2GB: the last wins,
silently) while k8s said 1GB and the docs 4GB. Memory sizing legitimately differs per target,
so those keys are passed by each target itself, but never twice and never a file setting.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import (
    AKASH_HA_SDL,
    AKASH_SDL,
    COMPOSE_FILE,
    K8S_DIR,
    ROOT,
    load_yaml,
    load_yaml_documents,
)

CONF = ROOT / "postgres" / "relay.conf"
DEPLOY_DOC = ROOT / "docs" / "DEPLOY.md"
K8S_POSTGRES = K8S_DIR / "datastores" / "postgres.yaml"
SIZING = {
    "max_connections",
    "shared_buffers",
    "effective_cache_size",
    "work_mem",
    "maintenance_work_mem",
    "max_parallel_workers_per_gather",
}
"""Settings each target sizes to its own memory (and /dev/shm), passed as `-c` arguments."""
MOUNTED = "/etc/postgresql/relay.conf"
IMAGE_DEFAULTS = {"listen_addresses"}
"""Needed only where the file replaces the image's postgresql.conf (compose, k8s)."""


def parse_conf(text: str) -> dict[str, str]:
    """`name = value` lines (comments and blank lines skipped), a repeated name refused."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, value = line.partition("=")
        assert sep, f"line {number}: not name = value: {raw!r}"
        name = name.strip()
        assert name not in values, f"line {number}: {name} set twice"
        values[name] = value.strip().strip("'")
    return values


def parse_args(args: Sequence[str]) -> dict[str, str]:
    """`-c name=value` pairs of a postgres command line, a repeated name refused."""
    values: dict[str, str] = {}
    items = [str(a) for a in args]
    for index, item in enumerate(items):
        if item != "-c":
            continue
        name, _, value = items[index + 1].partition("=")
        if name in values:
            raise AssertionError(f"{name} passed twice ({values[name]}, then {value})")
        values[name] = value
    return values


def docs_table(text: str) -> dict[str, str]:
    """The rows of the table between the `postgres-settings` markers in docs/DEPLOY.md."""
    match = re.search(r"<!-- postgres-settings -->(.*?)<!-- /postgres-settings -->", text, re.S)
    assert match, "docs/DEPLOY.md lacks the <!-- postgres-settings --> table"
    rows: dict[str, str] = {}
    for line in match.group(1).splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0] and cells[0] != "setting" and not set(cells[0]) <= {"-"}:
            rows[cells[0]] = cells[1]
    return rows


def _postgres_statefulset() -> dict[str, Any]:
    for doc in load_yaml_documents(K8S_POSTGRES.read_text()):
        if doc["kind"] == "StatefulSet":
            container: dict[str, Any] = doc["spec"]["template"]["spec"]["containers"][0]
            return container
    raise AssertionError("no StatefulSet in k8s/datastores/postgres.yaml")


def _k8s_configmap() -> str:
    for doc in load_yaml_documents(K8S_POSTGRES.read_text()):
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "postgres-config":
            text: str = doc["data"]["relay.conf"]
            return text
    raise AssertionError("no ConfigMap postgres-config in k8s/datastores/postgres.yaml")


def target_errors(
    name: str, args: dict[str, str], conf: dict[str, str], mounted: bool
) -> list[str]:
    """What is wrong with one target's `-c` arguments (empty: nothing)."""
    errors = []
    for key, value in args.items():
        if key == "config_file":
            if not mounted or value != MOUNTED:
                errors.append(f"{name}: config_file={value}")
        elif key in conf:
            errors.append(f"{name}: {key} belongs in postgres/relay.conf, not -c")
        elif key not in SIZING:
            errors.append(f"{name}: -c {key} is neither sizing nor in postgres/relay.conf")
    if mounted and args.get("config_file") != MOUNTED:
        errors.append(f"{name}: does not load {MOUNTED}")
    return errors


@pytest.fixture(scope="module")
def conf() -> dict[str, str]:
    return parse_conf(CONF.read_text())


def test_compose_mounts_the_file_and_passes_only_sizing(conf: dict[str, str]) -> None:
    postgres = load_yaml(COMPOSE_FILE)["services"]["postgres"]
    assert f"./postgres/relay.conf:{MOUNTED}:ro" in postgres["volumes"]
    assert target_errors("compose", parse_args(postgres["command"]), conf, mounted=True) == []


def test_k8s_configmap_is_the_file_and_the_statefulset_passes_only_sizing(
    conf: dict[str, str],
) -> None:
    assert _k8s_configmap() == CONF.read_text()
    container = _postgres_statefulset()
    assert target_errors("k8s", parse_args(container["args"]), conf, mounted=True) == []
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts.get("config") == str(Path(MOUNTED).parent)


@pytest.mark.parametrize(
    ("sdl", "service"),
    [
        (AKASH_SDL, "postgres"),
        (AKASH_HA_SDL, "postgres"),
        (AKASH_HA_SDL, "postgres-replica"),
    ],
    ids=["deploy.yaml", "deploy-ha.yaml", "deploy-ha.yaml replica"],
)
def test_akash_repeats_every_file_setting_with_the_same_value(
    conf: dict[str, str], sdl: Path, service: str
) -> None:
    args = parse_args(load_yaml(sdl)["services"][service]["args"])
    shared = {k: v for k, v in args.items() if k not in SIZING}
    expected = {k: v for k, v in conf.items() if k not in IMAGE_DEFAULTS}
    assert shared == expected


def test_compose_runs_the_replica_from_the_same_file(conf: dict[str, str]) -> None:
    replica = load_yaml(COMPOSE_FILE)["services"]["postgres-replica"]
    assert f"./postgres/relay.conf:{MOUNTED}:ro" in replica["volumes"]
    assert target_errors("compose replica", parse_args(replica["command"]), conf, True) == []


def test_the_k8s_initdb_configmap_is_the_replication_script() -> None:
    script = (ROOT / "postgres" / "init-replication.sh").read_text()
    for doc in load_yaml_documents(K8S_POSTGRES.read_text()):
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "postgres-initdb":
            assert doc["data"] == {"10-replication.sh": script}
            return
    raise AssertionError("no ConfigMap postgres-initdb in k8s/datastores/postgres.yaml")


def test_the_docs_table_shows_the_file(conf: dict[str, str]) -> None:
    assert docs_table(DEPLOY_DOC.read_text()) == conf


def test_the_checks_catch_a_setting_passed_twice_or_in_two_places(conf: dict[str, str]) -> None:
    with pytest.raises(AssertionError, match="max_wal_size passed twice"):
        parse_args(["postgres", "-c", "max_wal_size=4GB", "-c", "max_wal_size=2GB"])
    with pytest.raises(AssertionError, match="set twice"):
        parse_conf("max_wal_size = 4GB\nmax_wal_size = 2GB\n")
    args = {"config_file": MOUNTED, "max_wal_size": "1GB", "shared_buffers": "1GB", "x": "1"}
    assert target_errors("k8s", args, conf, mounted=True) == [
        "k8s: max_wal_size belongs in postgres/relay.conf, not -c",
        "k8s: -c x is neither sizing nor in postgres/relay.conf",
    ]
    assert docs_table("<!-- postgres-settings -->\n| a | 1 |\n<!-- /postgres-settings -->") == {
        "a": "1"
    }
