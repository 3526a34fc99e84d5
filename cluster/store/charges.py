"""The charge the store applies with an event: neutral data, so the store needs no payments code.

The payment gate (cluster/payments) builds a `Charge` from a verified claim and the channel state
it was checked against; the store only writes it, and decides the nonce and capacity rules inside
the transaction that stores the event, where concurrent claims are serialised.
"""

from __future__ import annotations

import msgspec


class Charge(msgspec.Struct, frozen=True):
    """One claim to charge, with the channel terms it was verified against (all plain values)."""

    channel_id: str
    nonce: int
    amount: int
    currency: str
    sender_pubkey: str
    capacity: int
    expiration: int
    status: str
