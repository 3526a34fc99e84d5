"""How many instances and workers `relay-cluster up` runs when it is not told: from the cores.

Relay workers for half the cores: `up` runs PostgreSQL, Redis and nginx on the same machine,
and they spend about as much CPU per event as the relay does. On 2 cores, 1 x 1 served 1,000
and 2,000 events/s with a lower p95 and a quarter to a half less CPU than 2 x 1, on two machines
of the kind (docs/PERFORMANCE.md and docs/PERFORMANCE-LOG.md, "Shapes"; 2 x 2 was slower
still): a worker alone batches more events per commit and per wake-up, and reads no other
worker's events from the fan-out. 2 x 1 only holds more at the top (3,800 against 3,300 ev/s
before falling behind, both far past p95 < 10 ms), which an operator can ask for, with the
standby it gives: `--instances 2`. Two instances once there are two workers (4 cores), so one
can restart while the other serves.
"""

from __future__ import annotations

import os

import msgspec


class Shape(msgspec.Struct, frozen=True):
    instances: int
    workers: int  # per instance

    def __str__(self) -> str:
        return f"{self.instances} instances x {self.workers} workers"


def usable_cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def relay_workers(cores: int) -> int:
    """Relay workers in all: half the cores, at least one."""
    return max(1, cores // 2)


def default_shape(cores: int) -> Shape:
    total = relay_workers(cores)
    instances = 2 if total >= 2 else 1
    return Shape(instances=instances, workers=total // instances)


def choose_shape(instances: int | None, workers: int | None, cores: int | None = None) -> Shape:
    """What the operator asked for, the rest from the machine (half the cores in all)."""
    cores = usable_cores() if cores is None else cores
    chosen = default_shape(cores).instances if instances is None else instances
    per_instance = max(1, relay_workers(cores) // chosen)
    return Shape(instances=chosen, workers=per_instance if workers is None else workers)
