"""The ledger node's RPC procedures: typed inputs, one handler each, and the dispatcher.

Procedures (input → result; errors are `<reason>[: details]` messages):

    payment.getChannelState    query     {channelId} → ChannelState (capacity, balance bigint)
    payment.verifyPaymentClaim query     {channelId, amountSats, nonce, signature, currency}
                                         → {valid: true} | {valid: false, error: <reason>}
    payment.recordClaim        mutation  {channelId, amount, nonce, eventId} → {channelId,
                                         nonce, amount, eventId, recordedAt, duplicate}
    ledger.getBalance          query     {accountPath} → bigint; paths:
                                           channel/<channelId>        remaining balance
                                           channel/<channelId>/spent  recorded on that channel
                                           relay/received             recorded on all channels
    settlement.openChannel     mutation  {senderPubkey, capacity, currency | blockchain,
                                          expiresIn?, sender?, recipient?} → ChannelState
    settlement.closeChannel    mutation  {channelId} → ChannelState (status CLOSED)

Error reasons: the PaymentReason values (unknown_channel, insufficient_balance, ...), plus
invalid_request, invalid_input, invalid_route_type, unknown_procedure, unknown_account,
nonce_conflict and internal_error.

A claim is judged by the same pure rules as the relay's gate (cluster/payments/rules.py,
NODE_RULES); the transport is in cluster/ledger/server.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
import psycopg
import psycopg_pool
from coincurve import PublicKey
from msgspec import Meta

from cluster.ledger.config import DEFAULT_RECIPIENT
from cluster.ledger.store import LedgerError, LedgerStore
from cluster.payments import superjson
from cluster.payments.claims import (
    CHANNEL_ID_PATTERN,
    MAX_AMOUNT,
    SIGNATURE_PATTERN,
    claim_of,
)
from cluster.payments.model import ChannelState, Currency
from cluster.payments.model import PaymentReason as Reason
from cluster.payments.rules import node_verdict

log = logging.getLogger(__name__)

DEFAULT_EXPIRES_IN = 30 * 24 * 3600
MAX_BIGINT = 2**63 - 1

ChannelId = Annotated[str, Meta(pattern=CHANNEL_ID_PATTERN)]
Amount = Annotated[int, Meta(ge=1, le=MAX_AMOUNT)]
Nonce = Annotated[int, Meta(ge=0, le=MAX_AMOUNT)]
Signature = Annotated[str, Meta(pattern=SIGNATURE_PATTERN)]
EventId = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
CompressedKey = Annotated[str, Meta(pattern=r"^0[23][0-9a-fA-F]{64}$")]
Capacity = Annotated[int, Meta(ge=1, le=MAX_BIGINT)]
ExpiresIn = Annotated[int, Meta(ge=1, le=100 * 365 * 24 * 3600)]
Label = Annotated[str, Meta(min_length=1, max_length=256)]


# -- wire types ------------------------------------------------------------------------------


class Request(msgspec.Struct, frozen=True, rename="camel"):
    protocol: Literal["dassie-rpc-01"]
    type: Literal["request", "cancel"]
    id: str
    route_type: Literal["query", "mutation", "subscription"] | None = None
    path: list[str] = []
    input: Any = None


class _Input(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    pass


class ChannelRef(_Input, frozen=True):
    channel_id: ChannelId


class VerifyClaimInput(_Input, frozen=True):
    channel_id: ChannelId
    amount_sats: Amount
    nonce: Nonce
    signature: Signature
    currency: Currency


class RecordClaimInput(_Input, frozen=True):
    channel_id: ChannelId
    amount: Amount
    nonce: Nonce
    event_id: EventId


class BalanceInput(_Input, frozen=True):
    account_path: Annotated[str, Meta(min_length=1, max_length=300)]


class OpenChannelInput(_Input, frozen=True):
    sender_pubkey: CompressedKey
    capacity: Capacity
    currency: Currency | None = None
    blockchain: Currency | None = None
    expires_in: ExpiresIn = DEFAULT_EXPIRES_IN
    sender: Label | None = None
    recipient: Label | None = None


def channel_to_wire(state: ChannelState) -> dict[str, Any]:
    """ChannelState as Dassie sends it: camelCase, capacity and balance as superjson bigints."""
    wire: dict[str, Any] = msgspec.to_builtins(state)
    wire["capacity"] = superjson.BigInt(state.capacity)
    wire["balance"] = superjson.BigInt(state.balance)
    return wire


# -- procedures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ledger:
    """What the procedures need: the store, the default recipient, and a clock."""

    store: LedgerStore
    recipient: str = DEFAULT_RECIPIENT
    clock: Callable[[], float] = time.time

    def now(self) -> int:
        return int(self.clock())


async def get_channel_state(ledger: Ledger, input: ChannelRef) -> Any:
    state = await ledger.store.channel_state(input.channel_id, ledger.now())
    if state is None:
        raise LedgerError(Reason.UNKNOWN_CHANNEL.value)
    return channel_to_wire(state)


async def verify_payment_claim(ledger: Ledger, input: VerifyClaimInput) -> Any:
    now = ledger.now()
    claim = claim_of(
        input.channel_id, input.amount_sats, input.nonce, input.signature, input.currency
    )
    reason = node_verdict(claim, await ledger.store.channel_state(input.channel_id, now), now)
    return {"valid": True} if reason is None else {"valid": False, "error": reason.value}


async def record_claim(ledger: Ledger, input: RecordClaimInput) -> Any:
    recorded = await ledger.store.record_claim(
        input.channel_id, input.nonce, input.amount, input.event_id
    )
    return {
        "channelId": recorded.channel_id,
        "nonce": recorded.nonce,
        "amount": superjson.BigInt(recorded.amount),
        "eventId": recorded.event_id,
        "recordedAt": recorded.recorded_at,
        "duplicate": recorded.duplicate,
    }


async def get_balance(ledger: Ledger, input: BalanceInput) -> Any:
    path = input.account_path
    if path == "relay/received":
        return superjson.BigInt(await ledger.store.total_received())
    kind, _, rest = path.partition("/")
    channel_id, _, leaf = rest.partition("/")
    if kind == "channel" and channel_id and leaf in ("", "spent"):
        state = await ledger.store.channel_state(channel_id, ledger.now())
        if state is None:
            raise LedgerError(Reason.UNKNOWN_CHANNEL.value)
        balance = state.balance if leaf == "" else state.capacity - state.balance
        return superjson.BigInt(balance)
    raise LedgerError(
        f"unknown_account: {path!r} (known: channel/<id>, channel/<id>/spent, relay/received)"
    )


async def open_channel(ledger: Ledger, input: OpenChannelInput) -> Any:
    blockchain = input.currency or input.blockchain
    if blockchain is None:
        raise LedgerError("invalid_input: currency (or blockchain) is required")
    if input.currency and input.blockchain and input.currency is not input.blockchain:
        raise LedgerError("invalid_input: currency and blockchain differ")
    pubkey = input.sender_pubkey.lower()
    try:
        PublicKey(bytes.fromhex(pubkey))
    except ValueError as exc:
        raise LedgerError(
            "invalid_input: senderPubkey is not a point on secp256k1 - at `$.senderPubkey`"
        ) from exc
    now = ledger.now()
    state = await ledger.store.open_channel(
        blockchain=blockchain,
        sender=input.sender or pubkey,
        sender_pubkey=pubkey,
        recipient=input.recipient or ledger.recipient,
        capacity=input.capacity,
        expiration=now + input.expires_in,
        now=now,
    )
    log.info("opened channel %s (%s sats, %s)", state.channel_id, state.capacity, blockchain)
    return channel_to_wire(state)


async def close_channel(ledger: Ledger, input: ChannelRef) -> Any:
    state = await ledger.store.close_channel(input.channel_id, ledger.now())
    if state is None:
        raise LedgerError(Reason.UNKNOWN_CHANNEL.value)
    return channel_to_wire(state)


@dataclass(frozen=True)
class Procedure:
    route_type: Literal["query", "mutation"]
    input_type: type[Any]
    handler: Callable[[Ledger, Any], Awaitable[Any]]


PROCEDURES: dict[str, Procedure] = {
    "payment.getChannelState": Procedure("query", ChannelRef, get_channel_state),
    "payment.verifyPaymentClaim": Procedure("query", VerifyClaimInput, verify_payment_claim),
    "payment.recordClaim": Procedure("mutation", RecordClaimInput, record_claim),
    "ledger.getBalance": Procedure("query", BalanceInput, get_balance),
    "settlement.openChannel": Procedure("mutation", OpenChannelInput, open_channel),
    "settlement.closeChannel": Procedure("mutation", ChannelRef, close_channel),
}


async def dispatch(ledger: Ledger, request: Request) -> dict[str, Any]:
    """Run one request and build its `result` ({type: success, data} or {type: error, message})."""
    name = ".".join(request.path)
    procedure = PROCEDURES.get(name)
    try:
        if procedure is None:
            raise LedgerError(f"unknown_procedure: {name or '(empty path)'}")
        if request.route_type != procedure.route_type:
            raise LedgerError(
                f"invalid_route_type: {name} is a {procedure.route_type},"
                f" not a {request.route_type}"
            )
        try:
            input = msgspec.convert(request.input, procedure.input_type)
        except msgspec.ValidationError as exc:
            raise LedgerError(f"invalid_input: {exc}") from exc
        data = await procedure.handler(ledger, input)
    except LedgerError as exc:
        return {"type": "error", "message": str(exc)}
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
        log.warning("%s: database unavailable: %r", name, exc)
        return {"type": "error", "message": "internal_error: database unavailable"}
    except psycopg.Error as exc:
        log.error("%s failed on the database: %r", name, exc)
        return {"type": "error", "message": "internal_error: database error"}
    return {"type": "success", "data": data}
