"""Payment data shared by the relay, the Dassie client and the ledger node (pure)."""

from __future__ import annotations

from enum import StrEnum

import msgspec


class ChannelStatus(StrEnum):
    OPEN = "OPEN"
    CLOSED = "CLOSED"
    EXPIRED = "EXPIRED"


class Currency(StrEnum):
    """The blockchains a channel can live on; a claim's currency must equal its channel's."""

    BTC = "BTC"
    BASE = "BASE"
    AKT = "AKT"
    XRP = "XRP"


class ChannelState(msgspec.Struct, frozen=True, rename="camel"):
    """`payment.getChannelState` result (camelCase on the wire, as Dassie sends it).

    capacity and balance are sats (big integers on the wire: superjson `bigint`).
    highest_nonce is -1 when no claim has been recorded yet.
    """

    channel_id: str
    blockchain: Currency
    sender: str
    sender_pubkey: str
    recipient: str
    capacity: int
    balance: int
    highest_nonce: int
    expiration: int
    status: ChannelStatus


class PaymentClaim(msgspec.Struct, frozen=True):
    """A parsed `payment` tag: the fields exactly as they appeared in the tag."""

    channel_id: str
    amount: int
    nonce: int
    signature: bytes  # 64 bytes r||s (a 65th recovery byte, if sent, is dropped)
    currency: Currency
    amount_text: str
    nonce_text: str


class PaymentReason(StrEnum):
    """Why a claim is refused: `restricted: invalid payment: <reason>` (docs/PAYMENTS.md)."""

    MALFORMED_TAG = "malformed_tag"
    UNKNOWN_CHANNEL = "unknown_channel"
    CHANNEL_CLOSED = "channel_closed"
    CHANNEL_EXPIRED = "channel_expired"
    CURRENCY_MISMATCH = "currency_mismatch"
    INVALID_SIGNATURE = "invalid_signature"
    STALE_NONCE = "stale_nonce"
    INSUFFICIENT_AMOUNT = "insufficient_amount"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    CLAIM_NOT_BOUND = "claim_not_bound"
