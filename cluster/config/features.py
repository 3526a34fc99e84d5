"""The settings of the optional features: search, negentropy, administration, the archive."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from cluster.config.types import Positive, Seconds


class SearchSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    enabled: bool = False
    """NIP-50 search. Its documents are on the write path: every text note's INSERT stores one
    (~90 us more per note, docs/SEARCH-AND-COUNT.md), so it is the operator's choice. On: the
    first worker to start gives stored events their documents and builds the index in the
    background (about 1.5 minutes per million events here) and NIP-11 lists 50. Off: `search`
    filters are refused `unsupported:`; `python -m cluster.store.search --off` stops writing
    documents."""
    config: Annotated[str, Meta(pattern=r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$")] = "simple"
    """PostgreSQL text search configuration of NIP-50 search (`simple`: no stemming, right
    for notes in every language; `english`, `german`, ...: stemmed). The stored documents are in
    one: after a change the relay recomputes them at start (`python -m cluster.store.search`
    does it in the foreground); until it is through, a stemmed word may miss older events."""


class NegentropySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """NIP-77 set reconciliation (cluster/relay/verbs/negentropy.py, docs/SYNC.md)."""

    enabled: bool = True
    """Answer NEG-OPEN (and list 77 in NIP-11); off: NEG-* is answered NEG-ERR `blocked:`."""
    max_sessions_per_connection: Positive = 4
    """Open reconciliations one connection may hold; one more is answered NEG-ERR `blocked:`."""
    max_items: Positive = 1_000_000
    """Most stored events one reconciliation covers (72 bytes each in memory while it is open);
    a filter matching more is answered NEG-ERR `blocked:` with this number."""
    max_worker_items: Positive = 2_000_000
    """Items all open reconciliations of one worker may hold together (about 144 MB); past it a
    NEG-OPEN is answered `rate-limited:` until others finish."""
    frame_size_limit: Annotated[int, Meta(ge=4096)] = 60_000
    """Largest negentropy message the relay sends, in bytes before hex (as strfry)."""
    idle_timeout: Seconds = 60.0
    """Seconds a reconciliation may wait for the client's next NEG-MSG before NEG-ERR `closed:`."""
    query_timeout_ms: Positive = 10_000
    """Statement timeout of the item list query of one NEG-OPEN."""


class AdminSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pubkeys: list[str] = msgspec.field(default_factory=list)
    """Hex pubkeys of the operators: NIP-86 management calls and the dashboard are authorised
    by NIP-98 events signed by one of them (RELAY_ADMIN__PUBKEYS='["<hex>"]')."""
    token: str = ""
    """A bearer token that also opens the dashboard (for operators without a NIP-07 signer);
    empty: NIP-98 only. At least 32 characters when set."""

    def __post_init__(self) -> None:
        for key in self.pubkeys:
            if (
                len(key) != 64
                or key != key.lower()
                or any(c not in "0123456789abcdef" for c in key)
            ):
                raise ValueError(f"admin.pubkeys: '{key}' is not a 64-character lowercase hex key")
        if self.token and len(self.token) < 32:
            raise ValueError("admin.token must be at least 32 characters")


class ArchiveSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The archive tier (docs/OPERATIONS.md, "The archive tier"): old events of some kinds move
    to `archived_events`, where REQ, COUNT and NIP-77 still find them."""

    horizons: dict[str, Positive] = {}
    """Seconds after its created_at an event of each kind moves to the archive (`{"7":
    2592000}`: reactions after 30 days); empty: nothing is archived. Regular kinds only
    (replaceable, ephemeral and addressable kinds are refused). Only ever lower a horizon:
    events already archived stay there, and reads look in the archive from the horizons."""
    batch_size: Positive = 5000
    """Events moved per transaction (one short DELETE ... INSERT per kind and batch)."""
    interval: Seconds = 600.0
    """Seconds between scheduled runs."""
    schedule: bool = True
    """Run the archive on a schedule in the relay (one runner cluster-wide, by an advisory
    lock); off: only `relay-cluster archive` moves events."""

    def __post_init__(self) -> None:
        for key in self.horizons:
            if not key.isdigit() or not 0 <= int(key) <= 65535:
                raise ValueError(f"archive.horizons: '{key}' is not a kind")
            kind = int(key)
            if kind in (0, 3) or 10000 <= kind < 40000:
                raise ValueError(f"archive.horizons: kind {kind} is not a regular kind")

    @property
    def kind_horizons(self) -> dict[int, int]:
        return {int(kind): seconds for kind, seconds in self.horizons.items()}
