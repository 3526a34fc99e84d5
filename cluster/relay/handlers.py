"""One handler per verb (EVENT, REQ, COUNT, CLOSE, AUTH), picked from a dict by message type."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from cluster import metrics
from cluster.nostr.auth import check_auth_event
from cluster.nostr.event import Event, encode_event, id_of_encoded, verify
from cluster.nostr.messages import (
    AuthCommand,
    CloseCommand,
    CountCommand,
    EventCommand,
    ReqCommand,
    closed_message,
    count_message,
    eose_message,
    event_message,
    notice_message,
    ok_message,
)
from cluster.nostr.rejection import Prefix, Rejection
from cluster.payments.gate import PaidClaim, invalid_payment
from cluster.payments.model import PaymentReason
from cluster.relay.connection import Connection
from cluster.relay.context import RelayContext
from cluster.relay.ordering import Place
from cluster.relay.policies import first_rejection
from cluster.relay.subscriptions import Subscription
from cluster.store.events import FANOUT_GRACE, SaveOutcome, SaveRequest
from cluster.store.writer import StoreUnavailable

log = logging.getLogger(__name__)

QUERY_FAILURES = (psycopg.Error, PoolTimeout, OSError, TimeoutError)

OUTCOME_ANSWERS: dict[SaveOutcome, tuple[bool, str]] = {
    SaveOutcome.STORED: (True, ""),
    SaveOutcome.DUPLICATE: (True, "duplicate: already have this event"),
    SaveOutcome.SUPERSEDED: (True, "duplicate: a newer version of this event is already stored"),
    SaveOutcome.DELETED: (False, "blocked: this event was deleted by its author"),
    SaveOutcome.STALE_NONCE: (False, invalid_payment(PaymentReason.STALE_NONCE).text),
    SaveOutcome.INSUFFICIENT_BALANCE: (
        False,
        invalid_payment(PaymentReason.INSUFFICIENT_BALANCE).text,
    ),
}


def answer(connection: Connection, event_id: str, accepted: bool, message: str) -> None:
    connection.context.stats.count_ok(message)
    connection.send(ok_message(event_id, accepted, message))


def refuse_subscription(connection: Connection, sub_id: str, refusal: Rejection) -> None:
    if refusal.prefix is Prefix.AUTH_REQUIRED:
        connection.offer_auth()
    connection.send(closed_message(sub_id, refusal.text))


async def handle_event(connection: Connection, command: Any, place: Place | None = None) -> None:
    """Verify, apply policy, check payment, store (group commit), answer OK only after commit,
    then fan out."""
    started = time.perf_counter()
    event = command.event
    context = connection.context
    rejection = (
        verify(event)
        or first_rejection(context.policies, event, int(time.time()))
        or await context.access.check_write(connection.access, event)
    )
    if rejection is not None:
        if rejection.prefix is Prefix.AUTH_REQUIRED:
            connection.offer_auth()
        answer(connection, event.id, False, rejection.text)
        return
    event_json = encode_event(event)
    if event.is_ephemeral:
        context.bus.publish(event, event_json)
        answer(connection, event.id, True, "")
        return
    paid = await _check_payment(context, event)
    if isinstance(paid, Rejection):
        answer(connection, event.id, False, paid.text)
        return
    request = SaveRequest(event, event_json.decode(), paid.record if paid else None)
    if place is not None:
        await place.wait_turn()
    try:
        committed = context.writer.submit(request, lane_key=connection.serial)
        if place is not None:
            place.done()
        outcome = await committed
        if outcome is SaveOutcome.INSUFFICIENT_BALANCE and paid is not None and paid.from_cache:
            # Our cached capacity may be stale (a top-up): refresh once before refusing.
            paid = await _check_payment(context, event, fresh=True)
            if isinstance(paid, Rejection):
                answer(connection, event.id, False, paid.text)
                return
            request = SaveRequest(event, request.raw, paid.record if paid else None)
            outcome = await context.writer.save(request, lane_key=connection.serial)
    except StoreUnavailable:
        answer(connection, event.id, False, f"{Prefix.ERROR}: could not store the event, retry")
        return
    accepted, message = OUTCOME_ANSWERS[outcome]
    answer(connection, event.id, accepted, message)
    if outcome is SaveOutcome.STORED:
        metrics.EVENT_ACCEPTANCE.observe(time.perf_counter() - started)
        context.bus.publish(event, event_json)
        if request.payment is not None and context.outbox is not None:
            context.outbox.wake()


async def _check_payment(
    context: RelayContext, event: Event, *, fresh: bool = False
) -> PaidClaim | Rejection | None:
    if context.payments is None:
        return None
    started = time.perf_counter()
    try:
        return await context.payments.check(event, fresh=fresh)
    finally:
        metrics.PAYMENT_VERIFICATION.observe(time.perf_counter() - started)


async def dispatch_event(connection: Connection, command: Any) -> None:
    await connection.run_limited(command)


async def handle_req(connection: Connection, command: Any) -> None:
    """Stored events newest first, EOSE, then live events; no gap and no repeat between them.

    The subscription is registered before the query, and live events that arrive meanwhile are
    held back and sent after EOSE unless the stored results already carried them.
    """
    assert isinstance(command, ReqCommand)
    context = connection.context
    sub_id = command.sub_id
    connection.drop_subscription(sub_id)  # NIP-01: a REQ overwrites its id's subscription
    refusal = await context.access.check_read(connection.access, command.filters)
    if refusal is not None:
        refuse_subscription(connection, sub_id, refusal)
        return
    if len(connection.subscriptions) >= context.settings.limits.max_subscriptions:
        connection.send(
            closed_message(
                sub_id,
                f"{Prefix.BLOCKED}: too many open subscriptions "
                f"(max {context.settings.limits.max_subscriptions})",
            )
        )
        return
    subscription = Subscription(connection, sub_id, command.filters)
    connection.add_subscription(subscription)
    try:
        stored = await context.store.query_rows(command.filters, int(time.time()))
    except QUERY_FAILURES as exc:
        log.warning("REQ query failed: %s", exc)
        connection.drop_subscription(sub_id)
        connection.send(closed_message(sub_id, f"{Prefix.ERROR}: could not query stored events"))
        return
    rows = stored.raws
    if context.access.must_screen_dms(command.filters):
        rows = [row for row in rows if context.access.may_see_stored(connection.access, row)]
    for row in rows:
        await connection.send_and_wait(event_message(sub_id, row))
    connection.send(eose_message(sub_id))
    # Events stored moments ago may still be travelling through the fan-out: do not let them
    # arrive a second time as live events.
    subscription.suppress(stored.recent_ids, time.monotonic() + FANOUT_GRACE)
    held = connection.pending_live.pop(subscription, None)
    if held and connection.subscriptions.get(sub_id) is subscription:
        already_sent = {id_of_encoded(row) for row in rows}
        for event_id, message in held:
            if event_id not in already_sent:
                connection.send(message)


async def handle_count(connection: Connection, command: Any) -> None:
    assert isinstance(command, CountCommand)
    refusal = await connection.context.access.check_read(connection.access, command.filters)
    if refusal is not None:
        refuse_subscription(connection, command.sub_id, refusal)
        return
    try:
        total = await connection.context.store.count(command.filters, int(time.time()))
    except QUERY_FAILURES as exc:
        log.warning("COUNT query failed: %s", exc)
        connection.send(
            closed_message(command.sub_id, f"{Prefix.ERROR}: could not count stored events")
        )
        return
    connection.send(count_message(command.sub_id, total))


async def handle_close(connection: Connection, command: Any) -> None:
    assert isinstance(command, CloseCommand)
    if connection.drop_subscription(command.sub_id) is None:
        connection.send(notice_message(f"invalid: no open subscription '{command.sub_id}'"))


async def handle_auth(connection: Connection, command: Any) -> None:
    """NIP-42: a signed kind-22242 event naming our challenge and URL authenticates its key."""
    assert isinstance(command, AuthCommand)
    event = command.event
    settings = connection.context.settings
    rejection = check_auth_event(
        event,
        connection.access.challenge,
        settings.relay_url,
        int(time.time()),
        settings.auth.window,
    )
    if rejection is not None:
        answer(connection, event.id, False, rejection.text)
        return
    connection.access.authenticate(event.pubkey)
    answer(connection, event.id, True, "")


HANDLERS: dict[type, Callable[[Connection, Any], Awaitable[None]]] = {
    EventCommand: dispatch_event,
    ReqCommand: handle_req,
    CountCommand: handle_count,
    CloseCommand: handle_close,
    AuthCommand: handle_auth,
}
