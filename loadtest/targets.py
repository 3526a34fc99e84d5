"""What the bench talks to: the public URL plus whatever it knows of the cluster behind it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec


@dataclass
class Target:
    url: str
    instance_urls: list[str] = field(default_factory=list)
    database_url: str | None = None
    ledger_url: str | None = None
    ledger_token: str | None = None
    watch: dict[str, list[int]] = field(default_factory=dict)
    """Process trees whose RSS the hold scenarios sample: each instance and nginx."""
    redis_url: str | None = None
    paid_kind: int | None = None
    paid_price: int = 0
    data_dir: Path | None = None
    """The cluster's data dir (`<data>/cluster` when the bench started it)."""


class ServiceRow(msgspec.Struct):
    name: str
    pid: int | None = None
    url: str | None = None


class ClusterState(msgspec.Struct):
    """The part of `relay-cluster up`'s cluster.json the bench reads."""

    url: str | None = None
    services: list[ServiceRow] = []


def target_from_state(state: dict[str, Any], cluster_dir: Path, url: str | None = None) -> Target:
    """A Target from cluster.json (+ ledger.token) of a running `relay-cluster up`."""
    parsed = msgspec.convert(state, ClusterState)
    services = {row.name: row for row in parsed.services}
    target = Target(url=url or parsed.url or "")
    target.instance_urls = [
        row.url for name, row in services.items() if name.startswith("instance-") and row.url
    ]
    target.watch = {
        name: [row.pid]
        for name, row in services.items()
        if row.pid and (name.startswith("instance-") or name == "nginx")
    }
    postgres = services.get("postgres")
    if postgres is not None and postgres.url and "***" not in postgres.url:
        target.database_url = postgres.url  # (a password it masks is of no use to us)
    target.redis_url = services["redis"].url if "redis" in services else None
    target.ledger_url = services["ledger"].url if "ledger" in services else None
    token_path = cluster_dir / "ledger.token"
    if token_path.exists():
        target.ledger_token = token_path.read_text().strip()
    target.data_dir = cluster_dir
    return target


def target_from_cluster_dir(cluster_dir: Path, url: str | None = None) -> Target:
    """Read cluster.json (+ ledger.token) of a running `relay-cluster up`."""
    return target_from_state(
        json.loads((cluster_dir / "cluster.json").read_text()), cluster_dir, url
    )
