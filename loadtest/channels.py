"""Payment channels for the paid scenario, opened on the cluster's ledger before it runs."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from cluster.payments.claims import sender_pubkey_of
from cluster.payments.dassie import DassieClient
from loadtest.errors import LoadTestError
from loadtest.files import Channel, ChannelsFile, write_json
from loadtest.presign import secret_for
from loadtest.targets import Target

CHANNEL_CAPACITY = 10**12


async def _open(ledger_url: str, token: str, secrets: list[str]) -> list[Channel]:
    async with DassieClient(ledger_url, token, timeout=10) as node:
        channels = []
        for secret in secrets:
            state = await node.open_channel(sender_pubkey_of(secret), CHANNEL_CAPACITY, "BTC")
            channels.append(Channel(state.channel_id, secret, "BTC"))
        return channels


def open_channels(target: Target, count: int, path: Path) -> ChannelsFile:
    """Open `count` channels (one per paid connection: nonces must rise per channel)."""
    if not (target.ledger_url and target.ledger_token and target.paid_kind is not None):
        raise LoadTestError("no ledger URL/token or priced kind: cannot open payment channels")
    run = os.urandom(4).hex()
    secrets = [secret_for(f"payer-{run}", i) for i in range(count)]
    channels = asyncio.run(_open(target.ledger_url, target.ledger_token, secrets))
    data = ChannelsFile(kind=target.paid_kind, price=target.paid_price, channels=channels)
    write_json(path, data, indent=1)
    path.chmod(0o600)
    return data
