"""PostgreSQL and Redis for the benches that need no cluster (COUNT, search, import).

The PostgreSQL is one of our own, tuned as `relay-cluster up` tunes the cluster's
(cluster/services/postgres.py `server_tuning`: shared buffers an eighth of the memory), so
the figures are those of the server a relay runs on. The machine's PostgreSQL has the
distribution's 128 MB of shared buffers: on a million events (a 1.4 GB table once search
documents are stored) most heap reads then come from the OS cache, and a search touching
1,400 pages took 14 ms there where a cached page costs a microsecond. BENCH_PG (a server
URL) measures a server of the operator's choosing instead. Redis: the machine's when it
answers (BENCH_REDIS), else one of our own.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import redis

from cluster.services.ports import free_port
from cluster.services.postgres import PostgresServer, machine_memory, server_tuning
from cluster.services.redis import RedisServer

REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")


def _answers(check: Callable[[], object]) -> bool:
    try:
        check()
        return True
    except Exception:  # any failure to reach it: start our own instead
        return False


@contextlib.contextmanager
def bench_services(work: Path) -> Iterator[tuple[str, str]]:
    """(PostgreSQL server URL, Redis URL), stopped (and their data left in `work`) at the end."""
    with contextlib.ExitStack() as stack:
        server = os.environ.get("BENCH_PG")
        if not server:
            postgres = PostgresServer(
                work / "bench-pg",
                free_port(),
                log_path=work / "bench-pg.log",
                extra_settings=server_tuning(machine_memory()),
            )
            postgres.start(timeout=120)
            stack.callback(postgres.stop)
            server = postgres.url("postgres")
        redis_url = REDIS
        if not _answers(lambda: redis.Redis.from_url(redis_url, socket_timeout=2).ping()):
            own = RedisServer(free_port(), work / "bench-redis")
            own.start()
            stack.callback(own.stop)
            redis_url = own.url()
        yield server, redis_url
