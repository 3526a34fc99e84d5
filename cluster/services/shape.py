"""How many instances and workers `relay-cluster up` runs when it is not told: from the cores.

One relay worker per core, never more: PostgreSQL, Redis and nginx run on the same machine and
each needs CPU for every event, so a second worker per core only adds context switches (2 x 2 on
2 cores measured slower than 2 x 1; docs/PERFORMANCE.md, "Shapes"). Two instances whenever
there are two cores, so one instance can restart (or be killed) while the other serves.
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


def default_shape(cores: int) -> Shape:
    instances = 2 if cores >= 2 else 1
    return Shape(instances=instances, workers=max(1, cores // instances))


def choose_shape(instances: int | None, workers: int | None, cores: int | None = None) -> Shape:
    """What the operator asked for, the rest from the machine (still one worker per core)."""
    cores = usable_cores() if cores is None else cores
    chosen = default_shape(cores).instances if instances is None else instances
    return Shape(instances=chosen, workers=max(1, cores // chosen) if workers is None else workers)
