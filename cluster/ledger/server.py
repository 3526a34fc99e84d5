"""The ledger node's aiohttp app: Dassie RPC (`dassie-rpc-01`) at /rpc, GET /health.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
import psycopg
import psycopg_pool
from aiohttp import WSMsgType, web
from coincurve import PublicKey
from msgspec import Meta

from cluster.ledger.store import LedgerError, LedgerStore, apply_ledger_migrations
from cluster.payments import superjson
from cluster.payments.claims import verify_claim_signature
from cluster.payments.model import ChannelState, ChannelStatus, Currency, PaymentClaim
from cluster.payments.model import PaymentReason as Reason

log = logging.getLogger(__name__)

PROTOCOL = "dassie-rpc-01"
TOKEN_ENV = "DASSIE_RPC_TOKEN"
DATABASE_ENVS = ("LEDGER_DATABASE_URL", "DATABASE_URL")
MIN_TOKEN_LENGTH = 32
DEFAULT_PORT = 5000
DEFAULT_RECIPIENT = "relay"
DEFAULT_EXPIRES_IN = 30 * 24 * 3600
MAX_MESSAGE_BYTES = 1024 * 1024
MAX_SAFE = 2**53 - 1
MAX_BIGINT = 2**63 - 1

ChannelId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,256}$")]
Amount = Annotated[int, Meta(ge=1, le=MAX_SAFE)]
Nonce = Annotated[int, Meta(ge=0, le=MAX_SAFE)]
Signature = Annotated[str, Meta(pattern=r"^[0-9a-fA-F]{128}([0-9a-fA-F]{2})?$")]
EventId = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
CompressedKey = Annotated[str, Meta(pattern=r"^0[23][0-9a-fA-F]{64}$")]
Capacity = Annotated[int, Meta(ge=1, le=MAX_BIGINT)]
ExpiresIn = Annotated[int, Meta(ge=1, le=100 * 365 * 24 * 3600)]
Label = Annotated[str, Meta(min_length=1, max_length=256)]


class LedgerConfigError(ValueError):
    """The ledger cannot start with this configuration; the message says what to fix."""


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


def claim_verdict(state: ChannelState | None, input: VerifyClaimInput, now: int) -> Reason | None:
    """Every check the node can make, in shared/PAYMENTS.md order (pure; None = valid).

    insufficient_amount is the relay's (it knows the price), so it never comes from here.
    """
    if state is None:
        return Reason.UNKNOWN_CHANNEL
    if state.status is ChannelStatus.CLOSED:
        return Reason.CHANNEL_CLOSED
    if state.status is ChannelStatus.EXPIRED or now >= state.expiration:
        return Reason.CHANNEL_EXPIRED
    if input.currency is not state.blockchain:
        return Reason.CURRENCY_MISMATCH
    claim = PaymentClaim(
        channel_id=input.channel_id,
        amount=input.amount_sats,
        nonce=input.nonce,
        signature=bytes.fromhex(input.signature[:128]),
        currency=input.currency,
        amount_text=str(input.amount_sats),
        nonce_text=str(input.nonce),
    )
    if not verify_claim_signature(claim, state.sender_pubkey):
        return Reason.INVALID_SIGNATURE
    if input.nonce <= state.highest_nonce:
        return Reason.STALE_NONCE
    if input.amount_sats > state.balance:
        return Reason.INSUFFICIENT_BALANCE
    return None


async def verify_payment_claim(ledger: Ledger, input: VerifyClaimInput) -> Any:
    now = ledger.now()
    reason = claim_verdict(await ledger.store.channel_state(input.channel_id, now), input, now)
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


# -- HTTP and WebSocket ------------------------------------------------------------------------

LEDGER_KEY = web.AppKey("ledger", Ledger)
TOKEN_KEY = web.AppKey("ledger_token", str)
DATABASE_URL_KEY = web.AppKey("ledger_database_url", str)
RECIPIENT_KEY = web.AppKey("ledger_recipient", str)
SOCKETS_KEY = web.AppKey("ledger_sockets", set[web.WebSocketResponse])


def check_token(token: str) -> str:
    """The RPC token, or LedgerConfigError when it is missing or too short to be a secret."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise LedgerConfigError(
            f"{TOKEN_ENV} must be at least {MIN_TOKEN_LENGTH} characters"
            f" (got {len(token)}); generate one with: openssl rand -hex 32"
        )
    return token


def ledger_config_from_env(
    env: Mapping[str, str] | None = None, database_url: str | None = None
) -> tuple[str, str]:
    """(database_url, token) from the environment, checked; database_url overrides the env."""
    env = os.environ if env is None else env
    url = database_url or next((env[name] for name in DATABASE_ENVS if env.get(name)), "")
    if not url:
        raise LedgerConfigError(
            "no database: set LEDGER_DATABASE_URL (or DATABASE_URL) to a PostgreSQL URL"
        )
    return url, check_token(env.get(TOKEN_ENV, ""))


def authorized(request: web.Request, token: str) -> bool:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), token.encode()
    )


async def rpc_socket(request: web.Request) -> web.StreamResponse:
    if not authorized(request, request.app[TOKEN_KEY]):
        raise web.HTTPUnauthorized(
            text="missing or invalid bearer token",
            headers={"WWW-Authenticate": 'Bearer realm="dassie-rpc"'},
        )
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, heartbeat=30.0)
    await ws.prepare(request)
    request.app[SOCKETS_KEY].add(ws)
    ledger = request.app[LEDGER_KEY]
    send_lock = asyncio.Lock()
    tasks: set[asyncio.Task[None]] = set()

    async def answer(request_id: str, result: dict[str, Any]) -> None:
        message = {"protocol": PROTOCOL, "type": "response", "id": request_id, "result": result}
        async with send_lock:
            if ws.closed:
                return
            try:
                await ws.send_str(superjson.dumps(message).decode())
            except ConnectionError:  # the client went away; it will retry what it needs
                log.debug("could not answer request %s: connection gone", request_id)

    async def serve(rpc: Request) -> None:
        try:
            await answer(rpc.id, await dispatch(ledger, rpc))
        except Exception:  # a bug in one request must not end the connection
            log.exception("request %s failed", rpc.id)
            await answer(rpc.id, {"type": "error", "message": "internal_error"})

    try:
        async for message in ws:
            if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            rpc = await _parse_request(message.data, answer)
            if rpc is None or rpc.type == "cancel":
                continue  # no subscriptions here, so there is nothing to cancel
            task = asyncio.create_task(serve(rpc))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        request.app[SOCKETS_KEY].discard(ws)
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return ws


async def _parse_request(
    raw: str | bytes, answer: Callable[[str, dict[str, Any]], Awaitable[None]]
) -> Request | None:
    """The request in a message, or None after answering (when it has an id) what is wrong."""
    try:
        envelope = msgspec.json.decode(raw)
        message = superjson.decode_superjson(envelope, in_place=True)
    except (msgspec.DecodeError, superjson.SuperjsonError) as exc:
        log.warning("dropping undecodable message: %s", exc)
        return None
    try:
        return msgspec.convert(message, Request)
    except msgspec.ValidationError as exc:
        request_id = message.get("id") if isinstance(message, dict) else None
        if isinstance(request_id, str):
            await answer(request_id, {"type": "error", "message": f"invalid_request: {exc}"})
        else:
            log.warning("dropping request without an id: %s", exc)
        return None


async def health(request: web.Request) -> web.Response:
    try:
        await asyncio.wait_for(request.app[LEDGER_KEY].store.ping(), timeout=2.0)
    except (TimeoutError, psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        return web.json_response({"status": "unavailable", "error": repr(exc)}, status=503)
    return web.json_response({"status": "ok"})


async def _ledger_context(app: web.Application) -> AsyncIterator[None]:
    """Migrate → pool → store; the pool closes on shutdown."""
    url = app[DATABASE_URL_KEY]
    applied = await apply_ledger_migrations(url)
    if applied:
        log.info("applied ledger migrations %s", applied)
    pool = psycopg_pool.AsyncConnectionPool(
        url,
        min_size=1,
        max_size=8,
        timeout=5.0,
        open=False,
        name="ledger",
        kwargs={
            "autocommit": True,
            "options": "-c statement_timeout=5000",
            "application_name": "relay-cluster-ledger",
        },
    )
    await pool.open(wait=True, timeout=30.0)
    app[LEDGER_KEY] = Ledger(LedgerStore(pool), recipient=app[RECIPIENT_KEY])
    yield
    await pool.close()


async def _close_sockets(app: web.Application) -> None:
    sockets: set[web.WebSocketResponse] = app[SOCKETS_KEY]
    await asyncio.gather(
        *(ws.close(code=1001, message=b"ledger shutting down") for ws in list(sockets)),
        return_exceptions=True,
    )


def create_ledger_app(
    database_url: str, token: str, *, recipient: str = DEFAULT_RECIPIENT
) -> web.Application:
    """The ledger app; raises LedgerConfigError for a token shorter than 32 characters."""
    app = web.Application()
    app[TOKEN_KEY] = check_token(token)
    app[DATABASE_URL_KEY] = database_url
    app[RECIPIENT_KEY] = recipient
    app[SOCKETS_KEY] = set()
    app.cleanup_ctx.append(_ledger_context)
    app.on_shutdown.append(_close_sockets)
    app.router.add_get("/rpc", rpc_socket)
    app.router.add_get("/health", health)
    return app


def run_ledger(host: str, port: int, database_url: str, token: str) -> None:
    """Serve the ledger until SIGINT/SIGTERM (blocking). `relay-cluster ledger` calls this."""
    app = create_ledger_app(database_url, token)
    log.info("starting the ledger on http://%s:%d (RPC at /rpc)", host, port)
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(app, host=host, port=port, print=None, access_log=None)
