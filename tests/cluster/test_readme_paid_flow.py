"""The README's paid flow, as a new user runs it: `up` with priced kinds, `relay-cluster env`,
`channel open`, then an ordinary Nostr client (nostr-sdk) publishes through nginx."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from nostr_sdk import Client, EventBuilder, Keys, Kind, RelayUrl, SecretKey, Tag

from cluster.services.launcher import ClusterProcess, relay_cluster_command
from cluster.services.ports import free_port
from tests.client import connect

TIMEOUT = timedelta(seconds=10)


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*relay_cluster_command(), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def exported(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        values[name] = value.strip("'")
    return values


@pytest.mark.timeout(300)
async def test_open_channel_sign_claim_publish_paid_kind_through_nginx(data_dir: Path) -> None:
    port = free_port()
    up = ClusterProcess(data_dir, port=port, env={"RELAY_PRICING": "1:10"}, instances=2)
    try:
        up.start()
        assert up.wait_ready() == f"ws://127.0.0.1:{port}"
        env_lines = run("env", "--data-dir", str(data_dir), env=dict(os.environ))
        assert env_lines.returncode == 0, env_lines.stderr
        services = exported(env_lines.stdout)
        assert services["RELAY_URL"] == f"ws://127.0.0.1:{port}"
        env = {**os.environ, **services}
        keys = Keys.generate()
        secret = keys.secret_key().to_hex()

        opened = run("channel", "open", "--secret", secret, "--capacity", "1000", env=env)
        assert opened.returncode == 0, opened.stderr
        channel = opened.stdout.strip().splitlines()[-1]
        assert channel.startswith("btc:")

        unpaid = run(
            "publish",
            "--relay",
            services["RELAY_URL"],
            "--secret",
            secret,
            "--content",
            "unpaid",
            env=env,
        )
        assert unpaid.returncode == 1
        assert "restricted: payment required: kind 1 costs 10 sats" in unpaid.stdout

        tag_out = run(
            "channel",
            "tag",
            "--secret",
            secret,
            "--channel",
            channel,
            "--amount",
            "10",
            "--nonce",
            "1",
            env=env,
        )
        assert tag_out.returncode == 0, tag_out.stderr
        tag = json.loads(tag_out.stdout)

        # An ordinary client: the user pastes the tag into the event and signs it.
        client = Client()
        await client.add_relay(RelayUrl.parse(services["RELAY_URL"]))
        try:
            await client.try_connect(timeout=TIMEOUT)
            keys_again = Keys(SecretKey.parse(secret))
            event = (
                EventBuilder(Kind(1), "paid through nginx")
                .tags([Tag.parse(tag)])
                .finalize(keys_again)
            )
            output = await asyncio.wait_for(client.send_event(event, ok_timeout=TIMEOUT), 15)
            assert output.failed == {}, output.failed
        finally:
            await client.disconnect()
            await client.shutdown()

        async with connect(services["RELAY_URL"]) as raw:
            stored = await raw.query("mine", {"ids": [event.id().to_hex()]})
        assert len(stored) == 1
        # The claim reaches the ledger through the outbox: its balance drops by the amount.
        for _ in range(100):
            state = run("channel", "state", channel, env=env)
            if "balance 990 sats" in state.stdout:
                break
            await asyncio.sleep(0.2)
        assert "balance 990 sats" in state.stdout, state.stdout
        assert up.terminate() == 0, up.transcript()
    finally:
        up.kill()
