"""The EVENT pipeline, top to bottom: decode, verify, policies, payment, commit, answer, publish.

1. decode   - done before this module: the connection's read loop turns the frame into an
              `EventCommand` (cluster/nostr/messages.py: size first, then msgspec), or answers a
              refusal itself.
2. admit    - a connection that sent many invalid EVENTs waits a little before each next one;
              at most `limits.max_inflight_events` EVENTs of one connection are in flight, and
              each takes its place in the connection's line (cluster/relay/ordering.py), so they
              are checked concurrently but reach the writer in the order the client sent them
              (a client's increasing payment nonces are charged in order); then the event counts
              against its address's budget (every EVENT, valid or not, before any costly work).
3. verify   - hex shapes, id = sha256 of the canonical serialisation, BIP-340 signature.
4. policies - the worker's write policies (cluster/relay/policies.py); a NIP-62 request to
              vanish naming this relay is carried out here and answered (`vanish`: for any
              author, so neither bans nor prices stand in its way); the operator's NIP-86
              decisions (cluster/relay/moderation.py), then access: NIP-42 AUTH,
              NIP-13 proof of work, NIP-70, the author's rate limit (cluster/relay/access.py).
              An event refused by 3 or 4 is a strike against its connection and address: too
              many and the connection is closed with 1008.
5. payment  - priced kinds: the claim is verified against the channel state
              (cluster/payments/gate.py); ephemeral events skip 5 and 6 (never stored).
6. commit   - the event (and its charge) joins its lane's next group commit
              (cluster/store/writer.py); the outcome arrives only after COMMIT. When the store
              refuses a charge that was judged against cached channel state, the gate decides
              whether to refresh and try once more.
7. answer   - OK with the outcome's NIP-01 prefix, queued on the connection's outbound queue
              (its writer task frames everything queued into one socket write).
8. publish  - stored and ephemeral events go to this worker's subscriptions at once and to every
              other worker through the Redis stream (cluster/bus/fanout.py).
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import WSCloseCode

from cluster import metrics
from cluster.nostr.event import Event, encode_event, verify
from cluster.nostr.messages import EventCommand
from cluster.nostr.rejection import Prefix, Rejection
from cluster.nostr.vanish import VANISH_KIND, targets_this_relay
from cluster.payments.gate import PaidClaim, invalid_payment
from cluster.payments.model import PaymentReason
from cluster.relay import freshness
from cluster.relay.connection import Connection
from cluster.relay.context import RelayContext
from cluster.relay.ordering import Place
from cluster.relay.policies import first_rejection
from cluster.relay.verbs.req import QUERY_FAILURES
from cluster.store.vanish import apply_vanish
from cluster.store.writer import SaveOutcome, SaveRequest, StoreUnavailable

log = logging.getLogger(__name__)

OUTCOME_ANSWERS: dict[SaveOutcome, tuple[bool, str]] = {
    SaveOutcome.STORED: (True, ""),
    SaveOutcome.DUPLICATE: (True, "duplicate: already have this event"),
    SaveOutcome.SUPERSEDED: (True, "duplicate: a newer version of this event is already stored"),
    SaveOutcome.DELETED: (False, "blocked: this event was deleted by its author"),
    SaveOutcome.VANISHED: (
        False,
        "blocked: its author asked this relay to delete everything up to this time (NIP-62)",
    ),
    SaveOutcome.STALE_NONCE: (False, invalid_payment(PaymentReason.STALE_NONCE).text),
    SaveOutcome.INSUFFICIENT_BALANCE: (
        False,
        invalid_payment(PaymentReason.INSUFFICIENT_BALANCE).text,
    ),
}
NOT_STORED = f"{Prefix.ERROR}: could not store the event, retry"
TOO_MANY_INVALID = "too many invalid events"
INTERNAL_ERROR = f"{Prefix.ERROR}: internal error while processing the event"


async def handle_event(connection: Connection, command: EventCommand) -> None:
    """Stage 2, admit: wait out an invalid-event penalty and for an in-flight slot (both hold
    the read loop: backpressure on the client), take a place in line, and run the rest
    concurrently with the connection's next messages."""
    penalty = connection.context.access.invalid_penalty(connection.access)
    if penalty:
        await asyncio.sleep(penalty)
    await connection.inflight.acquire()
    place = connection.line.join()
    connection.spawn(_run(connection, command.event, place))


async def _run(connection: Connection, event: Event, place: Place) -> None:
    try:
        await process(connection, event, place)
    except Exception:  # a bug must still produce an answer, and not kill the socket
        log.exception("EVENT handling failed")
        connection.ok(event.id, False, INTERNAL_ERROR)
    finally:
        if connection.context.reads_on_replicas:
            freshness.event_answered(connection)  # read-your-writes
        place.done()
        connection.inflight.release()


async def process(connection: Connection, event: Event, place: Place) -> None:
    """Stages 3 to 8 for one admitted event."""
    started = time.perf_counter()
    context = connection.context
    rejection = await context.access.admit_event(connection.access)  # 2: the address's budget
    if rejection is not None:
        connection.refuse_event(event.id, rejection)
        return
    rejection = verify(event) or first_rejection(context.policies, event, int(time.time()))  # 3, 4
    if rejection is not None:
        connection.refuse_event(event.id, rejection)  # 7
        if await context.access.note_invalid(connection.access):
            connection.condemn()
            await connection.flush(1.0)  # the client reads its last OK, then the close
            connection.abort(WSCloseCode.POLICY_VIOLATION, TOO_MANY_INVALID)
        return
    if event.kind == VANISH_KIND and await vanish(connection, event, place):
        return  # NIP-62: for every author, paid relay or not, AUTH or not
    rejection = context.moderation.refuse(event)  # 4: the operator's NIP-86 decisions
    if rejection is None:
        rejection = await context.access.check_write(connection.access, event)  # 4: access
    if rejection is not None:
        connection.refuse_event(event.id, rejection)
        return
    event_json = encode_event(event)
    if event.is_ephemeral:
        publish(context, event, event_json)  # 8, before the answer: it is never stored
        connection.ok(event.id, True, "")
        return
    paid = await check_payment(context, event)  # 5
    if isinstance(paid, Rejection):
        connection.refuse_event(event.id, paid)
        return
    try:
        outcome = await commit(connection, event, event_json.decode(), paid, place)  # 6
    except StoreUnavailable:
        connection.ok(event.id, False, NOT_STORED)
        return
    if isinstance(outcome, Rejection):
        connection.refuse_event(event.id, outcome)
        return
    accepted, message = OUTCOME_ANSWERS[outcome]
    connection.ok(event.id, accepted, message)  # 7
    if outcome is SaveOutcome.STORED:
        metrics.EVENT_ACCEPTANCE.observe(time.perf_counter() - started)
        publish(context, event, event_json)  # 8
        if paid is not None and context.outbox is not None:
            context.outbox.wake()


async def check_payment(context: RelayContext, event: Event) -> PaidClaim | Rejection | None:
    """Stage 5: None for a free kind, the charge to apply, or why the event is refused."""
    if context.payments is None:
        return None
    started = time.perf_counter()
    paid = await context.payments.check(event)
    if paid is not None:  # free kinds are not payment verifications (nor worth a histogram update)
        metrics.PAYMENT_VERIFICATION.observe(time.perf_counter() - started)
    return paid


async def commit(
    connection: Connection, event: Event, raw: str, paid: PaidClaim | None, place: Place
) -> SaveOutcome | Rejection:
    """Stage 6: queue on the connection's lane in the client's order; resolves after COMMIT.

    A charge the store refused for insufficient balance is retried once if the gate finds it was
    judged on stale channel state (a top-up not seen yet); otherwise the gate's refusal is final.
    """
    context = connection.context
    lane = connection.serial
    await place.wait_turn()
    committed = context.writer.submit(SaveRequest(event, raw, paid.charge if paid else None), lane)
    place.done()  # queued: the next EVENT of this connection may queue behind it
    outcome = await committed
    gate = context.payments
    if outcome is not SaveOutcome.INSUFFICIENT_BALANCE or paid is None or gate is None:
        return outcome
    retry = await gate.retry_if_stale(event, paid)
    if isinstance(retry, Rejection):
        return retry
    return await context.writer.save(SaveRequest(event, raw, retry.charge), lane)


async def vanish(connection: Connection, event: Event, place: Place) -> bool:
    """NIP-62: a request naming this relay deletes its author's events up to its created_at,
    cluster-wide, before the OK (cluster/store/vanish.py). False for one naming only other
    relays: it is then stored like any regular event."""
    context = connection.context
    ours = [context.settings.network.public_url] if context.settings.network.public_url else []
    if connection.host:
        ours.append(f"ws://{connection.host}")
    target = targets_this_relay(event, ours)
    if isinstance(target, Rejection):
        connection.refuse_event(event.id, target)
        return True
    if not target:
        return False
    event_json = encode_event(event)
    await place.wait_turn()  # after this connection's earlier EVENTs reached the writer
    place.done()
    try:
        deleted = await apply_vanish(context.store.pool, event, event_json.decode())
    except QUERY_FAILURES as exc:
        log.warning("request to vanish failed: %s", exc)
        connection.ok(event.id, False, NOT_STORED)
        return True
    log.info("NIP-62: deleted %d events of %s", deleted, event.pubkey)
    connection.ok(event.id, True, "")
    publish(context, event, event_json)  # mirrors and subscribers learn of it too
    return True


def publish(context: RelayContext, event: Event, event_json: bytes) -> None:
    """Stage 8: this worker's subscribers now, every other worker through the stream."""
    context.bus.publish(event, event_json)
