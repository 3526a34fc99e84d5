"""The Dassie node's payment procedures, typed, over the RPC transport (cluster/payments/rpc.py).

`DassieClient` is what the relay, the tools and the tests hold: one per worker process. The
transport's errors and the breaker's states are re-exported here, so callers need one import.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from cluster.payments.breaker import BreakerState, CircuitBreaker, Permit
from cluster.payments.model import ChannelState, Currency, PaymentReason
from cluster.payments.rpc import (
    DassieAuthError,
    DassieError,
    DassieRpc,
    DassieUnavailable,
    rpc_url,
)

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "ClaimVerification",
    "DassieAuthError",
    "DassieClient",
    "DassieError",
    "DassieUnavailable",
    "Permit",
    "rpc_url",
]

UNKNOWN_CHANNEL = PaymentReason.UNKNOWN_CHANNEL.value
DEFAULT_EXPIRES_IN = 30 * 24 * 3600

T = TypeVar("T")


class ClaimVerification(msgspec.Struct, frozen=True):
    """`payment.verifyPaymentClaim` result."""

    valid: bool
    error: PaymentReason | None = None


class DassieClient(DassieRpc):
    """A Dassie node's RPC over one multiplexed WebSocket; create one per worker process."""

    async def __aenter__(self) -> DassieClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def get_channel_state(self, channel_id: str) -> ChannelState | None:
        """The node's view of a channel; None when the node does not know it."""
        try:
            data = await self.query(("payment", "getChannelState"), {"channelId": channel_id})
        except DassieError as exc:
            if exc.code == UNKNOWN_CHANNEL:
                return None
            raise
        return _convert(data, ChannelState, "payment.getChannelState")

    async def verify_payment_claim(
        self,
        channel_id: str,
        amount_sats: int,
        nonce: int,
        signature: str,
        currency: Currency | str,
    ) -> ClaimVerification:
        data = await self.query(
            ("payment", "verifyPaymentClaim"),
            {
                "channelId": channel_id,
                "amountSats": amount_sats,
                "nonce": nonce,
                "signature": signature,
                "currency": str(currency),
            },
        )
        return _convert(data, ClaimVerification, "payment.verifyPaymentClaim")

    async def record_claim(self, channel_id: str, amount: int, nonce: int, event_id: str) -> Any:
        """Hand an accepted claim to the node; idempotent on (channel_id, nonce).

        The ledger answers {channelId, nonce, amount, eventId, recordedAt, duplicate}.
        """
        return await self.mutation(
            ("payment", "recordClaim"),
            {"channelId": channel_id, "amount": amount, "nonce": nonce, "eventId": event_id},
        )

    async def get_balance(self, account_path: str) -> int:
        data = await self.query(("ledger", "getBalance"), {"accountPath": account_path})
        if isinstance(data, bool) or not isinstance(data, int):
            raise DassieError(f"invalid_response: ledger.getBalance returned {data!r}")
        return data

    async def open_channel(
        self,
        sender_pubkey: str,
        capacity: int,
        currency: Currency | str,
        expires_in: int = DEFAULT_EXPIRES_IN,
        *,
        sender: str | None = None,
        recipient: str | None = None,
    ) -> ChannelState:
        """Development/test helper (`settlement.openChannel`)."""
        input: dict[str, Any] = {
            "senderPubkey": sender_pubkey,
            "capacity": capacity,
            "currency": str(currency),
            "expiresIn": expires_in,
        }
        if sender is not None:
            input["sender"] = sender
        if recipient is not None:
            input["recipient"] = recipient
        data = await self.mutation(("settlement", "openChannel"), input)
        return _convert(data, ChannelState, "settlement.openChannel")

    async def close_channel(self, channel_id: str) -> ChannelState:
        data = await self.mutation(("settlement", "closeChannel"), {"channelId": channel_id})
        return _convert(data, ChannelState, "settlement.closeChannel")


def _convert(data: Any, kind: type[T], name: str) -> T:
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        raise DassieError(f"invalid_response: {name}: {exc}") from exc
