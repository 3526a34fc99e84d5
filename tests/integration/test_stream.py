"""`relay-cluster stream`: a relay on another database followed live, across a restart of it.

The stream tool mirrors what the upstream sends into the local relay (through its EVENT path),
reconnects by itself when the upstream goes away, and catches up on what was published
meanwhile; events it already had come back as duplicates and change nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from cluster.nostr.signing import Signer
from cluster.tools.stream import run_stream
from tests.client import connect
from tests.services import RelayProcess, RelayStarter, migrated_database

WAIT = 20.0


@pytest.fixture
async def upstream_database(postgres_server_url: str) -> AsyncIterator[str]:
    async with migrated_database(postgres_server_url, "relay_stream") as url:
        yield url


async def mirrored(relay: RelayProcess, author: str, count: int) -> set[str]:
    """The author's events on `relay` once there are `count` of them (bounded wait)."""
    deadline = time.monotonic() + WAIT
    while True:
        async with connect(relay.url) as client:
            found = {e["id"] for e in await client.query("m", {"authors": [author]})}
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


async def test_stream_follows_live_and_catches_up_after_a_restart(
    relay: RelayProcess, upstream_database: str, start_relay: RelayStarter
) -> None:
    upstream = start_relay.start(workers=1, DATABASE_URL=upstream_database)
    author = Signer()
    # An hour old: before the stream starts and outside the catch-up window of a reconnect.
    before = author.sign(1, "published before the stream", created_at=int(time.time()) - 3600)
    async with connect(upstream.url) as client:
        assert (await client.publish(before))[2] is True
    stop = asyncio.Event()
    lines: list[str] = []
    task = asyncio.create_task(
        run_stream(upstream_url=upstream.url, local_url=relay.url, flt={}, stop=stop,
                   progress=lines.append, backoff_max=1.0)
    )  # fmt: skip
    try:
        while not any(line.startswith("following") for line in lines):
            await asyncio.sleep(0.05)
        live = [author.sign(1, f"live {i}") for i in range(5)]
        async with connect(upstream.url) as client:
            for event in live:
                assert (await client.publish(event))[2] is True
        assert await mirrored(relay, author.pubkey, 5) == {e.id for e in live}  # from now on

        upstream.stop()
        upstream.start()
        meanwhile = [author.sign(1, f"while away {i}") for i in range(3)]
        async with connect(upstream.url) as client:
            for event in meanwhile:
                assert (await client.publish(event))[2] is True
        assert await mirrored(relay, author.pubkey, 8) == {e.id for e in live + meanwhile}
    finally:
        stop.set()
        report = await asyncio.wait_for(task, WAIT)
    assert report.connects >= 2
    assert report.outcomes.get("stored") == 8
    assert report.invalid == 0
    assert any(line.startswith("disconnected") for line in lines)
