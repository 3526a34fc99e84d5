"""`relay-cluster sync`: two relays on two databases converge, and a second run moves nothing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import msgspec
import orjson
import pytest
from aiohttp import web

from cluster.nostr.signing import Signer
from cluster.tools.sync import fetch_events, run_sync
from tests.client import connect
from tests.services import RelayProcess, RelayStarter, migrated_database


@pytest.fixture
async def other_database(postgres_server_url: str) -> AsyncIterator[str]:
    async with migrated_database(postgres_server_url, "relay_sync") as url:
        yield url


async def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`relay-cluster` in a subprocess, off the event loop."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cluster.cli", *args],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def stored_ids(relay: RelayProcess, authors: list[str]) -> set[str]:
    async with connect(relay.url) as client:
        return {event["id"] for event in await client.query("ids", {"authors": authors})}


async def test_two_relays_converge_after_sync(
    relay: RelayProcess, database_url: str, other_database: str, start_relay: RelayStarter
) -> None:
    remote = start_relay.start(workers=1, DATABASE_URL=other_database)
    alice, bob = Signer(), Signer()
    authors = [alice.pubkey, bob.pubkey]
    now = int(time.time())
    events = [
        (alice if i % 2 else bob).sign(1, f"note {i}", created_at=now - 100 + i) for i in range(30)
    ]
    async with connect(relay.url) as local_client, connect(remote.url) as remote_client:
        for event in events[:20]:
            assert (await local_client.publish(event))[2] is True
        for event in events[10:]:
            assert (await remote_client.publish(event))[2] is True
    everything = {event.id for event in events}
    flt = {"authors": authors}
    lines: list[str] = []

    down = await run_sync(
        remote_url=remote.url,
        local_url=relay.url,
        database_url=database_url,
        flt=flt,
        direction="down",
        batch=4,  # several REQ batches
        progress=lines.append,
    )
    assert down.difference is not None
    assert sorted(down.difference.need) == sorted(event.id for event in events[20:])
    assert sorted(down.difference.have) == sorted(event.id for event in events[:10])
    assert down.downloaded == {"stored": 10} and down.uploaded == {}
    assert await stored_ids(relay, authors) == everything
    assert await stored_ids(remote, authors) == {event.id for event in events[10:]}
    assert any(line.startswith("down 10/10") for line in lines), lines

    both = await run_sync(
        remote_url=remote.url,
        local_url=relay.url,
        database_url=database_url,
        flt=flt,
        direction="both",
        progress=lines.append,
    )
    assert both.difference is not None and both.difference.need == []
    assert both.downloaded == {} and both.uploaded == {"stored": 10}
    assert await stored_ids(remote, authors) == everything

    # A third run, through the command line, finds nothing left to move.
    completed = await cli(
        database_url,
        "sync",
        "--relay",
        remote.url,
        "--local",
        relay.url,
        "--filter",
        json.dumps(flt),
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout.splitlines()[-1]) == {"downloaded": {}, "uploaded": {}}
    assert "0 to download, 0 to upload" in completed.stderr


async def test_sync_reports_a_refusal_clearly(relay: RelayProcess, database_url: str) -> None:
    completed = await cli(database_url, "sync", "--relay", relay.url, "--filter", "[1]")
    assert completed.returncode == 1
    assert "--filter" in completed.stderr


async def test_fetched_events_are_verified_before_they_are_kept() -> None:
    """A remote that serves a forged signature, an altered content and an event nobody asked
    for: only the authentic, requested event is kept."""
    signer = Signer()
    good, forged, altered, unasked = (signer.sign(1, f"e{i}") for i in range(4))
    served = [
        msgspec.to_builtins(good),
        {**msgspec.to_builtins(forged), "sig": "00" * 64},
        {**msgspec.to_builtins(altered), "content": "changed"},
        msgspec.to_builtins(unasked),
    ]

    async def remote(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            verb, sub_id, *_ = orjson.loads(message.data)
            if verb == "REQ":
                for event in served:
                    await ws.send_str(orjson.dumps(["EVENT", sub_id, event]).decode())
                await ws.send_str(orjson.dumps(["EOSE", sub_id]).decode())
        return ws

    app = web.Application()
    app.router.add_get("/", remote)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"ws://127.0.0.1:{port}/") as ws,
        ):
            raws = await fetch_events(ws, [good.id, forged.id, altered.id])
    finally:
        await runner.cleanup()
    assert [orjson.loads(raw)["id"] for raw in raws] == [good.id]
