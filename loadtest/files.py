"""The files the bench hands to its load tools: the fill manifest and the paid channels.

Both are JSON written by `loadtest.bench` and read by the generator and the locustfile, so their
fields are the contract between them (every field has a default: older files still decode).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

DEFAULT_PAID_KIND = 4242


class FillManifest(msgspec.Struct, kw_only=True):
    """What the fill stored: values worth asking for in queries, and how the fill went."""

    count: int = 0
    added: int = 0
    stored: int = 0
    seed: str = ""
    authors: list[str] = []
    event_ids: list[str] = []
    e_targets: list[str] = []
    p_targets: list[str] = []
    hashtags: list[str] = []
    kinds: dict[str, int] = {}
    time_min: int | None = None
    time_max: int | None = None
    copy_s: float = 0.0
    fill_s: float = 0.0
    rate: int = 0
    table_size: str = "?"
    reused: bool = False


class Channel(msgspec.Struct, frozen=True):
    """A channel that pays for events sent on one connection (nonces must rise per channel)."""

    channel_id: str
    secret: str
    currency: str = "BTC"


class ChannelsFile(msgspec.Struct, kw_only=True):
    """Channels opened on the ledger for one priced kind, one or more per paying connection."""

    kind: int = DEFAULT_PAID_KIND
    price: int = 1
    channels: list[Channel] = []


def read_manifest(path: str | Path) -> FillManifest:
    return msgspec.json.decode(Path(path).read_bytes(), type=FillManifest)


def read_channels(path: str | Path) -> ChannelsFile:
    return msgspec.json.decode(Path(path).read_bytes(), type=ChannelsFile)


def write_json(path: Path, value: msgspec.Struct, indent: int = 0) -> None:
    """One Struct as a JSON file (pretty when `indent`), ending in a newline."""
    encoded = msgspec.json.encode(value)
    path.write_bytes((msgspec.json.format(encoded, indent=indent) if indent else encoded) + b"\n")
