"""`relay-cluster up --replicas 1`: a streaming replica of the embedded PostgreSQL, whose URL
every instance gets as database.replica_urls, and which follows what the relay stores."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import psycopg
import pytest

from cluster.nostr.signing import Signer
from cluster.services.launcher import ClusterProcess
from cluster.services.ports import free_port
from tests.client import connect
from tests.cluster.test_local_cluster import child_pids, stop_and_check_nothing_left


def environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


@pytest.mark.timeout(420)
async def test_up_with_one_replica_hands_its_url_to_the_instances(data_dir: Path) -> None:
    port = free_port()
    up = ClusterProcess(data_dir, port=port, instances=1, workers=1, replicas=1)
    try:
        up.start()
        assert up.wait_ready(timeout=240) == f"ws://127.0.0.1:{port}"
        state = up.state()
        rows = {row["name"]: row for row in state["services"]}
        assert {"postgres", "replica-1", "instance-1"} <= set(rows), state
        replica_url = rows["replica-1"]["url"]
        assert replica_url.endswith("/relay") and replica_url != rows["postgres"]["url"]

        env = environment_of(rows["instance-1"]["pid"])
        assert json.loads(env["RELAY_DATABASE__REPLICA_URLS"]) == [replica_url]
        assert env["DATABASE_URL"] == rows["postgres"]["url"]

        event = Signer().sign(1, "stored on the primary, replayed by the replica")
        async with connect(f"ws://127.0.0.1:{port}") as client:
            assert (await client.publish(event))[2] is True
            stored = await client.query("q", {"ids": [event.id]})
            assert [e["id"] for e in stored] == [event.id]

        with psycopg.connect(replica_url, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            assert row == (True,)
            deadline = time.monotonic() + 20
            while not conn.execute(
                "SELECT 1 FROM events WHERE id = %s", (bytes.fromhex(event.id),)
            ).fetchone():
                assert time.monotonic() < deadline, "the replica never replayed the event"
                await asyncio.sleep(0.1)

        stop_and_check_nothing_left(up, child_pids(state))
    finally:
        up.kill()
