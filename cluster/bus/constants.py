"""Redis key and stream names, in one place (every name starts with the configured prefix)."""

from __future__ import annotations


def events_stream(prefix: str) -> str:
    """The stream every accepted event is appended to, read by every worker of every instance."""
    return f"{prefix}events"


# Stream entry fields: who published it (so the publisher skips its own), when (wall clock,
# for the delivery-lag histogram), and a JSON array of up to 100 events.
FIELD_ORIGIN = b"o"
FIELD_SENT_AT = b"t"
FIELD_EVENTS = b"e"
