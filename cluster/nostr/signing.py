"""Create signed events: the one signer of tests, tools and the load generator.

coincurve's `PrivateKey.sign_schnorr` rebuilds the BIP-340 keypair and verifies its own
signature on every call, about three times the cost of signing; pre-signing millions of events
for a load test is dominated by that. `Signer` builds the keypair once and calls the same
libsecp256k1 function (through coincurve's cffi bindings) per event. On a coincurve build
without those bindings it falls back to the public API. Either way the signatures are ordinary
BIP-340 ones (tests/loadtest/test_signing.py checks them with `cluster.nostr.event.verify`).
"""

from __future__ import annotations

import os
import time
from typing import Any

from coincurve import PrivateKey

from cluster.nostr.event import Event, compute_id, encode_event

try:  # private to coincurve, present in every wheel it ships; checked again per key below
    from coincurve._libsecp256k1 import ffi as _ffi
    from coincurve._libsecp256k1 import lib as _lib
except ImportError:  # pragma: no cover - other coincurve builds: the public API only
    _ffi = _lib = None


def generate_secret() -> str:
    return os.urandom(32).hex()


def public_key_of(secret_hex: str) -> str:
    """The x-only (BIP-340) public key, 64 hex, that Nostr uses as an identity."""
    return PrivateKey(bytes.fromhex(secret_hex)).public_key_xonly.format().hex()


def event_frame(event: Event) -> str:
    """The exact `["EVENT", <event>]` text a client sends (the event encoded once)."""
    return '["EVENT",' + encode_event(event).decode() + "]"


class Signer:
    """Holds one secret key and signs events with it (the keypair is built once, see above)."""

    def __init__(self, secret_hex: str | None = None) -> None:
        self.secret = secret_hex or generate_secret()
        self._key = PrivateKey(bytes.fromhex(self.secret))
        self.pubkey = self._key.public_key_xonly.format().hex()
        self._keypair: Any = None
        if _ffi is not None and _lib is not None:
            keypair = _ffi.new("secp256k1_keypair *")
            if _lib.secp256k1_keypair_create(self._key.context.ctx, keypair, self._key.secret):
                self._keypair = keypair

    @property
    def fast(self) -> bool:
        """True when signing goes straight to libsecp256k1 with the prebuilt keypair."""
        return self._keypair is not None

    def sign_digest(self, digest: bytes) -> str:
        """BIP-340 signature (128 hex) of a 32-byte digest (an event id), fresh aux randomness."""
        if self._keypair is None or _lib is None or _ffi is None:
            return str(self._key.sign_schnorr(digest, os.urandom(32)).hex())
        # A fresh output buffer per call: cffi releases the GIL during the call, so a buffer
        # shared by threads signing with one Signer could be overwritten before it is read.
        out = _ffi.new("unsigned char[64]")
        ctx = self._key.context.ctx
        if not _lib.secp256k1_schnorrsig_sign32(ctx, out, digest, self._keypair, os.urandom(32)):
            raise ValueError("BIP-340 signing failed (libsecp256k1 refused the digest)")
        return bytes(_ffi.buffer(out, 64)).hex()

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
        return Event(
            id=event_id,
            pubkey=unsigned.pubkey,
            created_at=unsigned.created_at,
            kind=kind,
            tags=unsigned.tags,
            content=content,
            sig=self.sign_digest(bytes.fromhex(event_id)),
        )
