"""Two whole `relay-cluster up` clusters (each its own PostgreSQL, Redis, instances and nginx)
converge with `relay-cluster sync`, then stay converged while each streams the other.

Publishing goes through each cluster's nginx from loopback; nginx forwards the address and a
forwarded address is never exempt, so the clusters run with the bench's limits off (the
sync and stream tools publish as fast as they can).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.nostr.event import Event
from cluster.nostr.signing import Signer
from cluster.services.launcher import ClusterProcess
from cluster.services.ports import free_port
from cluster.tools.stream import run_stream
from cluster.tools.sync import run_sync
from loadtest.launch import rate_limit_overrides
from tests.client import connect

WAIT = 30.0


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[tuple[ClusterProcess, ClusterProcess]]:
    env = rate_limit_overrides()
    a = ClusterProcess(tmp_path / "a", port=free_port(), instances=2, env=env)
    b = ClusterProcess(tmp_path / "b", port=free_port(), instances=1, env=env)
    with a, b:
        a.wait_ready()
        b.wait_ready()
        yield a, b


def database_of(cluster: ClusterProcess) -> str:
    rows = cluster.state()["services"]
    return str(next(row["url"] for row in rows if row["name"] == "postgres"))


def url_of(cluster: ClusterProcess) -> str:
    return f"ws://127.0.0.1:{cluster.port}"


async def ids_on(cluster: ClusterProcess, authors: list[str]) -> set[str]:
    async with connect(url_of(cluster)) as client:
        return {e["id"] for e in await client.query("ids", {"authors": authors, "limit": 100})}


async def publish(cluster: ClusterProcess, events: list[Event]) -> None:
    async with connect(url_of(cluster)) as client:
        for event in events:
            assert (await client.publish(event))[2] is True


async def converged(
    a: ClusterProcess, b: ClusterProcess, authors: list[str], want: set[str]
) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        on_a, on_b = await ids_on(a, authors), await ids_on(b, authors)
        if on_a == on_b == want or time.monotonic() > deadline:
            assert on_a == want and on_b == want, (len(on_a), len(on_b), len(want))
            return
        await asyncio.sleep(0.3)


@pytest.mark.timeout(420)
async def test_two_clusters_converge_by_sync_and_stay_converged_by_stream(
    clusters: tuple[ClusterProcess, ClusterProcess],
) -> None:
    a, b = clusters
    alice, bob = Signer(), Signer()
    authors = [alice.pubkey, bob.pubkey]
    now = int(time.time())
    only_a = [alice.sign(1, f"a {i}", created_at=now - 300 + i) for i in range(12)]
    only_b = [bob.sign(1, f"b {i}", created_at=now - 300 + i) for i in range(9)]
    both = [alice.sign(1, f"both {i}", created_at=now - 200 + i) for i in range(5)]
    await publish(a, only_a + both)
    await publish(b, only_b + both)
    everything = {e.id for e in only_a + only_b + both}
    assert await ids_on(a, authors) != await ids_on(b, authors)

    lines: list[str] = []
    report = await run_sync(
        remote_url=url_of(b), local_url=url_of(a), database_url=database_of(a),
        flt={"authors": authors}, direction="both", progress=lines.append,
    )  # fmt: skip
    assert report.difference is not None
    assert (len(report.difference.need), len(report.difference.have)) == (9, 12)
    await converged(a, b, authors, everything)

    stop = asyncio.Event()
    streams = [
        asyncio.create_task(
            run_stream(
                upstream_url=url_of(up),
                local_url=url_of(down),
                flt={"authors": authors},
                stop=stop,
                progress=lines.append,
                backoff_max=1.0,
            )
        )
        for up, down in ((a, b), (b, a))
    ]
    try:
        while sum(line.startswith("following") for line in lines) < 2:
            await asyncio.sleep(0.05)
        later_a = [alice.sign(1, f"later a {i}") for i in range(6)]
        later_b = [bob.sign(1, f"later b {i}") for i in range(4)]
        await publish(a, later_a)
        await publish(b, later_b)
        await converged(a, b, authors, everything | {e.id for e in later_a + later_b})
    finally:
        stop.set()
        reports = await asyncio.wait_for(asyncio.gather(*streams), WAIT)
    # Each side stored what the other published; what came back from the mirror was a duplicate.
    assert sorted(r.outcomes.get("stored", 0) for r in reports) == [4, 6]
