"""Stand-ins for the gate's collaborators: a fixed price table, a scripted channel cache."""

from __future__ import annotations

from dataclasses import dataclass, field

from cluster.nostr.event import Event
from cluster.nostr.signing import Signer
from cluster.payments.channels import ChannelLookup, PaymentUnavailable
from cluster.payments.claims import payment_tag, sender_pubkey_of
from cluster.payments.model import ChannelState, ChannelStatus, Currency
from cluster.payments.pricing import PriceTable

NOW = 1_700_000_000
PRICED, PRICE = 4000, 10


class FixedPricing:
    def __init__(self, table: PriceTable) -> None:
        self.table = table

    async def current(self) -> PriceTable:
        return self.table


@dataclass
class ScriptedChannels:
    """Answers the cached lookup and the fresh one from separate scripts; records every call.

    A script entry is a ChannelLookup, or None for "the node is unreachable".
    """

    cached: ChannelLookup | None = None
    fresh: ChannelLookup | None = None
    calls: list[bool] = field(default_factory=list)  # the `fresh` flag of each lookup

    async def get(self, channel_id: str, *, fresh: bool = False) -> ChannelLookup:
        self.calls.append(fresh)
        answer = self.fresh if fresh else self.cached
        if answer is None:
            raise PaymentUnavailable("node unreachable (scripted)")
        return answer


class Payer:
    """A Nostr key that is also a channel's sender."""

    def __init__(self) -> None:
        self.signer = Signer()
        self.secret = self.signer.secret

    def state(
        self,
        channel_id: str = "btc:test",
        *,
        capacity: int = 1000,
        balance: int | None = None,
        highest_nonce: int = -1,
        status: ChannelStatus = ChannelStatus.OPEN,
        expiration: int = NOW + 3600,
        blockchain: Currency = Currency.BTC,
    ) -> ChannelState:
        return ChannelState(
            channel_id=channel_id,
            blockchain=blockchain,
            sender="sender",
            sender_pubkey=sender_pubkey_of(self.secret),
            recipient="relay",
            capacity=capacity,
            balance=capacity if balance is None else balance,
            highest_nonce=highest_nonce,
            expiration=expiration,
            status=status,
        )

    def event(
        self,
        amount: int = PRICE,
        nonce: int = 1,
        *,
        kind: int = PRICED,
        channel_id: str = "btc:test",
        currency: str = "BTC",
        tags: list[list[str]] | None = None,
    ) -> Event:
        tag = payment_tag(self.secret, channel_id, amount, nonce, currency)
        return self.signer.sign(kind, "paid", [tag] if tags is None else tags)
