"""`relay-cluster channel ...` and `relay-cluster pricing ...`: payments by hand."""

from __future__ import annotations

import json
import os

import psycopg

from cluster.config import ConfigError
from cluster.payments.claims import payment_tag, sender_pubkey_of
from cluster.payments.dassie import DassieClient
from cluster.payments.model import ChannelState
from cluster.store.payments import set_kind_price


def node_client() -> DassieClient:
    url = os.environ.get("DASSIE_RPC_URL", "")
    token = os.environ.get("DASSIE_RPC_TOKEN", "")
    if not url or not token:
        raise ConfigError("set DASSIE_RPC_URL and DASSIE_RPC_TOKEN to talk to the Dassie node")
    return DassieClient(url, token, timeout=10)


def describe(state: ChannelState) -> str:
    return (
        f"channel {state.channel_id}: {state.status} on {state.blockchain}, "
        f"capacity {state.capacity} sats, balance {state.balance} sats, "
        f"highest nonce {state.highest_nonce}, expires at {state.expiration}"
    )


async def open_channel(
    sender_pubkey: str | None, secret: str | None, capacity: int, currency: str, expires_in: int
) -> str:
    """Open a development channel; returns the text to print (the id alone on the last line)."""
    if sender_pubkey is None:
        if secret is None:
            raise ConfigError("give --sender-pubkey (66 hex) or --secret (64 hex)")
        sender_pubkey = sender_pubkey_of(secret)
    async with node_client() as node:
        state = await node.open_channel(sender_pubkey, capacity, currency, expires_in)
    return f"{describe(state)}\n{state.channel_id}"


async def channel_state(channel_id: str) -> str:
    async with node_client() as node:
        state = await node.get_channel_state(channel_id)
    return f"unknown channel {channel_id}" if state is None else describe(state)


async def close_channel(channel_id: str) -> str:
    async with node_client() as node:
        return describe(await node.close_channel(channel_id))


def signed_tag(secret: str, channel_id: str, amount: int, nonce: int, currency: str) -> str:
    """The payment tag as JSON, ready to paste into any Nostr client's tag editor."""
    return json.dumps(payment_tag(secret, channel_id, amount, nonce, currency))


async def set_price(database_url: str, kind: int, sats: int | None) -> str:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await set_kind_price(conn, kind, sats)
    if sats is None:
        return f"kind {kind}: override removed (configured price applies)"
    return f"kind {kind}: {sats} sats (workers pick it up within pricing.refresh_seconds)"
