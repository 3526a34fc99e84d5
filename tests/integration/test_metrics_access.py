"""/metrics is never public: the token guards it on the public port, or a private listener
serves it and the public port refuses it (issue 13). Real relays over real sockets."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp

from cluster.services.ports import free_port
from tests.services import RelayProcess, RelayStarter

TOKEN = "t" * 40
TIMEOUT = aiohttp.ClientTimeout(total=5)


async def get(url: str, **headers: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.get(url, headers=headers) as response,
    ):
        return response.status, await response.text()


def workers_of(relay: RelayProcess) -> list[int]:
    """The gunicorn master's children: the relay's workers."""
    assert relay.process is not None
    master = relay.process.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


async def test_metrics_are_refused_without_token_or_private_listener(
    start_relay: RelayStarter,
) -> None:
    relay = start_relay.start(workers=1)
    status, text = await get(f"{relay.http_url}/metrics")
    assert status == 404 and "relay_" not in text
    status, _ = await get(f"{relay.http_url}/metrics", Authorization="Bearer ")
    assert status == 404
    assert (await get(f"{relay.http_url}/health"))[0] == 200  # the rest still answers


async def test_only_the_right_bearer_reads_metrics(start_relay: RelayStarter) -> None:
    relay = start_relay.start(workers=1, RELAY_NETWORK__METRICS_TOKEN=TOKEN)
    url = f"{relay.http_url}/metrics"
    for headers in (
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer "},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": TOKEN},  # no scheme
        {"Authorization": f"Basic {TOKEN}"},
    ):
        status, text = await get(url, **headers)
        assert (status, "relay_" in text) == (401, False), headers
    status, text = await get(url, Authorization=f"Bearer {TOKEN}")
    assert status == 200 and "relay_subscriptions" in text


async def test_private_listener_serves_metrics_and_public_port_refuses(
    start_relay: RelayStarter,
) -> None:
    private = free_port()
    relay = start_relay.start(
        workers=2,
        RELAY_NETWORK__METRICS_TOKEN=TOKEN,  # even with the token, public never serves it
        RELAY_NETWORK__METRICS_PORT=str(private),
        RELAY_NETWORK__METRICS_HOST="127.0.0.1",
    )
    private_url = f"http://127.0.0.1:{private}"
    status, text = await wait_for_metrics(f"{private_url}/metrics", deadline=20)
    assert status == 200 and "relay_subscriptions" in text
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
        status, text = await get(f"{relay.http_url}/metrics", **headers)
        assert status == 404 and "relay_" not in text
    # Nothing else of the relay is reachable on the private port.
    assert (await get(f"{private_url}/health"))[0] == 404
    assert (await get(f"{private_url}/"))[0] == 404

    # Whichever worker held the port dies: a sibling or a replacement takes it over.
    killed = workers_of(relay)
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    end = time.monotonic() + 10
    while set(killed) & set(workers_of(relay)):  # reaped by the master: their sockets are gone
        assert time.monotonic() < end, "gunicorn did not reap its killed workers"
        await asyncio.sleep(0.1)
    status, text = await wait_for_metrics(f"{private_url}/metrics", deadline=30)
    assert status == 200 and "relay_subscriptions" in text
    # A worker sent SIGTERM before it installed its own handlers ignores it until gunicorn's
    # graceful timeout (a gunicorn race): let the replacements boot before the fixture stops.
    while len(workers_of(relay)) < 2:
        assert time.monotonic() < end + 30, "gunicorn did not replace its workers"
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)


async def wait_for_metrics(url: str, *, deadline: float) -> tuple[int, str]:
    """Poll until the private listener answers (workers bind it once they have started)."""
    end = time.monotonic() + deadline
    while True:
        try:
            return await get(url)
        except aiohttp.ClientError:
            if time.monotonic() > end:
                raise
        await asyncio.sleep(0.2)
