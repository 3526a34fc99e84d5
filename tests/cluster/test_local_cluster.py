"""`relay-cluster up` end to end: embedded PostgreSQL + Redis, two instances behind nginx,
a clean SIGTERM that leaves no process behind, and a second `up` on the same data dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from cluster.nostr.signing import Signer
from cluster.services.launcher import ClusterProcess
from cluster.services.ports import free_port, wait_group_gone
from tests.client import connect

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


async def req_until_eose(url: str, sub_id: str) -> list[Any]:
    """Raw aiohttp WebSocket: REQ with limit 1, messages until (and including) EOSE."""
    received: list[Any] = []
    async with (
        aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session,
        session.ws_connect(url) as ws,
    ):
        await ws.send_str(orjson.dumps(["REQ", sub_id, {"limit": 1}]).decode())
        while not received or received[-1][0] != "EOSE":
            received.append(orjson.loads(await ws.receive_str(timeout=10)))
    return received


async def get_health(port: int) -> int:
    async with (
        aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session,
        session.get(f"http://127.0.0.1:{port}/health") as response,
    ):
        await response.read()
        return response.status


def stop_and_check_nothing_left(up: ClusterProcess, pids: dict[str, int]) -> None:
    assert up.terminate() == 0, up.transcript()
    for name, pid in pids.items():
        # Each child leads its own process group: workers and backends must be gone too.
        assert wait_group_gone(pid, timeout=5), f"{name} (pid {pid}) group still alive"
        assert not alive(pid), f"{name} (pid {pid}) still alive"
    assert not (up.data_dir / "cluster.json").exists()


def child_pids(state: dict[str, Any]) -> dict[str, int]:
    return {row["name"]: row["pid"] for row in state["services"] if row["pid"] is not None}


@pytest.mark.timeout(420)
async def test_up_serves_stops_cleanly_and_restarts_on_the_same_data(data_dir: Path) -> None:
    port = free_port()
    signer = Signer()

    up = ClusterProcess(data_dir, port=port)
    try:
        up.start()
        assert up.wait_ready() == f"ws://127.0.0.1:{port}"
        state = up.state()
        pids = child_pids(state)
        expected = {"postgres", "redis", "ledger", "nginx", "instance-1", "instance-2"}
        assert set(pids) == expected, state
        assert all(alive(pid) for pid in pids.values())
        first_postgres = next(row["url"] for row in state["services"] if row["name"] == "postgres")

        assert await get_health(port) == 200
        messages = await req_until_eose(f"ws://127.0.0.1:{port}", "s")
        assert messages[-1] == ["EOSE", "s"]

        event = signer.sign(1, "kept across restarts")
        async with connect(f"ws://127.0.0.1:{port}") as client:
            ok = await client.publish(event)
            assert ok[2] is True, ok

        stop_and_check_nothing_left(up, pids)
    finally:
        up.kill()

    # Second run: same data dir, so the same PostgreSQL data (and port) come back.
    up = ClusterProcess(data_dir, port=port)
    try:
        up.start()
        assert up.wait_ready() == f"ws://127.0.0.1:{port}"
        state = up.state()
        again = next(row["url"] for row in state["services"] if row["name"] == "postgres")
        assert again == first_postgres
        assert await get_health(port) == 200
        async with connect(f"ws://127.0.0.1:{port}") as client:
            stored = await client.query("q", {"ids": [event.id]})
            assert [e["id"] for e in stored] == [event.id]
        stop_and_check_nothing_left(up, child_pids(state))
    finally:
        up.kill()
