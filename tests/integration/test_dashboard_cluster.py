"""The dashboard through nginx on a whole `relay-cluster up` (two instances): the page loads
through the load balancer, the data needs the token, and whichever instance answers reports
both instances and the traffic each took."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cluster.nostr.signing import Signer
from cluster.services.launcher import ClusterProcess
from cluster.services.ports import free_port
from tests.client import connect

TOKEN = secrets.token_hex(20)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Outside pytest's tmp dir: the embedded PostgreSQL runs unprivileged (see tests/cluster)."""
    path = Path(tempfile.mkdtemp(prefix="relay-dashboard-up-"))
    try:
        yield path / "data"
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def get(url: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(url, headers=headers) as response,
    ):
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


@pytest.mark.timeout(300)
async def test_dashboard_through_nginx_sees_both_instances(data_dir: Path) -> None:
    port = free_port()
    up = ClusterProcess(data_dir, port=port, env={"RELAY_ADMIN__TOKEN": TOKEN})
    try:
        up.start()
        base = up.wait_ready().replace("ws://", "http://")
        status, page = await get(f"{base}/dashboard")
        assert status == 200 and "dashboard/dashboard.js" in page
        assert (await get(f"{base}/dashboard/data"))[0] == 401
        signer = Signer()
        async with connect(f"ws://127.0.0.1:{port}") as client:
            for i in range(5):
                assert (await client.publish(signer.sign(1, f"through nginx {i}")))[2] is True
            deadline = time.monotonic() + 30
            while True:
                status, data = await get(f"{base}/dashboard/data", TOKEN)
                assert status == 200, data
                totals = data["totals"]
                if (
                    totals["instances_up"] == 2
                    and totals["accepted_total"] >= 5
                    and totals["connections"] >= 1
                ):
                    break
                assert time.monotonic() < deadline, data
                await asyncio.sleep(0.5)
        assert [i["up"] for i in data["instances"]] == [True, True]
        assert data["health"]["postgres"] == "ok" and data["health"]["ledger"] == "ok"
        assert up.terminate() == 0, up.transcript()
    finally:
        up.kill()
