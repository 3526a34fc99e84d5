"""Fixtures for the multi-host tests: PostgreSQL, Redis and relays each in a namespace of its own.

Why a module of its own: these tests need root and build a small network (tests/netns/harness.py)
once per session; the relays, proxies and partitions of one test are undone when it ends, so the
tests stay independent. Without root the first fixture fails with the reason (never a skip).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.netns.harness import (
    ROOT,
    Host,
    Network,
    Proxy,
    Relay,
    require_root,
    start_postgres,
    start_redis,
)

METRICS_TOKEN = secrets.token_hex(16)
"""Bearer token of /metrics on every relay these tests start (commits are counted there)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here runs real processes: mark it `services` so `make test-fast` leaves it out."""
    for item in items:
        if "tests/netns/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.services)


@dataclass
class Service:
    host: Host
    url: str


@pytest.fixture(scope="session")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    require_root()
    net = Network(tmp_path_factory.mktemp("netns"))
    try:
        net.create()
        yield net
    finally:
        net.close()


@pytest.fixture(scope="session")
def ns_postgres(network: Network) -> Service:
    """PostgreSQL alone in its namespace, migrated once (from the host, over the bridge)."""
    host = network.add_host("pg")
    url = start_postgres(host)
    result = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "migrate"],
        env={**os.environ, "DATABASE_URL": url},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"migrate failed:\n{result.stdout}\n{result.stderr}")
    return Service(host, url)


@pytest.fixture(scope="session")
def ns_redis(network: Network) -> Service:
    host = network.add_host("redis")
    return Service(host, start_redis(host))


@dataclass
class Cluster:
    """What one test starts: relays and proxies in new hosts; undone by the fixture."""

    network: Network
    postgres: Service
    redis: Service
    prefix: str = field(default_factory=lambda: f"netns{secrets.token_hex(4)}:")
    relays: list[Relay] = field(default_factory=list)
    hosts: list[Host] = field(default_factory=list)

    def host(self, stem: str) -> Host:
        host = self.network.add_host(f"{stem}{len(self.network.hosts)}")
        self.hosts.append(host)
        return host

    def relay(
        self,
        stem: str,
        *,
        database_url: str | None = None,
        redis_url: str | None = None,
        **env: str,
    ) -> Relay:
        """A one-worker relay in a new host, sharing this test's Redis key prefix (so relays
        of one test fan out to each other and never to another test's)."""
        relay = Relay(
            self.host(stem),
            {
                "DATABASE_URL": database_url or self.postgres.url,
                "REDIS_URL": redis_url or self.redis.url,
                "RELAY_REDIS__KEY_PREFIX": self.prefix,
                "RELAY_NETWORK__METRICS_TOKEN": METRICS_TOKEN,
                # The test client is one address (the host's, on the bridge) doing the work of
                # many clients: its budgets would otherwise be what the tests measure.
                "RELAY_RATE_LIMITS__EXEMPT": f'["{self.network.subnet}"]',
                **env,
            },
        )
        self.relays.append(relay)
        relay.start()
        return relay

    def proxy(self, stem: str, target: tuple[str, int], port: int = 9000) -> Proxy:
        return Proxy(self.host(stem), port, target)

    def close(self) -> None:
        for a, b in list(self.network.partitions):
            self.network.heal(self.network.hosts[a], self.network.hosts[b])
        for host in [*self.hosts, self.postgres.host, self.redis.host]:
            host.set_link(True)
        for relay in self.relays:
            relay.stop()
        for host in self.hosts:
            host.stop_processes()


@pytest.fixture
def cluster(network: Network, ns_postgres: Service, ns_redis: Service) -> Iterator[Cluster]:
    built = Cluster(network, ns_postgres, ns_redis)
    try:
        yield built
    finally:
        built.close()
