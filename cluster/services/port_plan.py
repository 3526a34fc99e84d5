"""Which ports one `up` uses: the same as last time when free (ports.json), else fresh ones.

Reusing the embedded PostgreSQL's port keeps DATABASE_URLs that people exported valid across
restarts; the instances prefer the ports right after the public one (8081, 8082, ... for 8080)
and the other services are kept off those.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from cluster.services.instance import HOST
from cluster.services.ports import free_port

PORTS_FILE = "ports.json"


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


class PortPlan:
    """The ports of one `up`: the public one, the instances', and the named services'."""

    def __init__(self, data_dir: Path, public_port: int, instances: int) -> None:
        self.path = data_dir / PORTS_FILE
        self.public_port = public_port
        self.preferred_instances = [public_port + i for i in range(1, 1 + instances)]
        self.taken = {public_port, *self.preferred_instances}

    def saved(self) -> dict[str, int]:
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(raw, dict):
            return {}
        return {key: value for key, value in raw.items() if isinstance(value, int)}

    def pick(self, name: str) -> int:
        """A port for service `name`: last run's when it is free."""
        return pick_port(self.saved().get(name), self.taken)

    def remember(self, name: str, port: int) -> None:
        """Record the port of a service that started, for the next `up`."""
        merged = {**self.saved(), name: port}
        self.path.write_text(json.dumps(merged, indent=2) + "\n")

    def instance_ports(self) -> list[int]:
        """One port per instance, the preferred ones when free (called once, after the rest)."""
        self.taken -= set(self.preferred_instances)
        return [pick_port(port, self.taken) for port in self.preferred_instances]
