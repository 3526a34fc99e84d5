"""Create signed events: used by tests, the load generator and people publishing by hand."""

from __future__ import annotations

import os
import time

from coincurve import PrivateKey

from cluster.nostr.event import Event, compute_id


def generate_secret() -> str:
    return os.urandom(32).hex()


def public_key_of(secret_hex: str) -> str:
    """The x-only (BIP-340) public key, 64 hex, that Nostr uses as an identity."""
    return PrivateKey(bytes.fromhex(secret_hex)).public_key_xonly.format().hex()


class Signer:
    """Holds one secret key and signs events with it (keeps the parsed key to sign quickly)."""

    def __init__(self, secret_hex: str | None = None) -> None:
        self.secret = secret_hex or generate_secret()
        self._key = PrivateKey(bytes.fromhex(self.secret))
        self.pubkey = self._key.public_key_xonly.format().hex()

    def sign(
        self,
        kind: int,
        content: str = "",
        tags: list[list[str]] | None = None,
        created_at: int | None = None,
    ) -> Event:
        unsigned = Event(
            id="",
            pubkey=self.pubkey,
            created_at=int(time.time()) if created_at is None else created_at,
            kind=kind,
            tags=tags or [],
            content=content,
            sig="",
        )
        event_id = compute_id(unsigned)
        sig = self._key.sign_schnorr(bytes.fromhex(event_id), os.urandom(32)).hex()
        return Event(
            id=event_id,
            pubkey=unsigned.pubkey,
            created_at=unsigned.created_at,
            kind=kind,
            tags=unsigned.tags,
            content=content,
            sig=sig,
        )
