"""Redis key and stream names, in one place (every name starts with the configured prefix)."""

from __future__ import annotations


def events_stream(prefix: str) -> str:
    """The stream every accepted event is appended to, read by every worker of every instance."""
    return f"{prefix}events"


def moderation_channel(prefix: str) -> str:
    """The pub/sub channel of NIP-86 decisions: a message means "reload them"."""
    return f"{prefix}moderation"


def dashboard_workers_key(prefix: str) -> str:
    """Hash: worker id -> unix time it last published its dashboard snapshot."""
    return f"{prefix}dashboard:workers"


def dashboard_snapshot_key(prefix: str, worker: str) -> str:
    """One worker's latest dashboard snapshot (JSON), expiring after its TTL."""
    return f"{prefix}dashboard:worker:{worker}"


# Stream entry fields: who published it (so the publisher skips its own), when (wall clock,
# for the delivery-lag histogram), and a JSON array of up to 100 events.
FIELD_ORIGIN = b"o"
FIELD_SENT_AT = b"t"
FIELD_EVENTS = b"e"
