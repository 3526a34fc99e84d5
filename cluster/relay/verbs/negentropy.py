"""NEG-OPEN / NEG-MSG / NEG-CLOSE (NIP-77): negentropy set reconciliation over stored events.

NEG-OPEN reads the filter's items, (created_at, id) only, in one indexed query
(cluster/store/items.py) under the worker's query admission and the same read access as REQ
and COUNT: DMs the client may not read are left out, as COUNT leaves them out. The relay then
plays the negentropy server (cluster/nostr/negentropy.py) until the client stops.

Each open reconciliation holds its items in memory (72 bytes each), so what it may hold is
bounded three ways: `negentropy.max_items` per reconciliation (more: NEG-ERR `blocked:` with
that number, as NIP-77 suggests), `negentropy.max_sessions_per_connection`, and
`negentropy.max_worker_items` across the worker (more: `rate-limited:`, retry later). A
reconciliation the client leaves idle for `negentropy.idle_timeout` ends with NEG-ERR
`closed:`; NEG-CLOSE, a NEG-ERR and the connection closing end it too. Subscription ids are
their own namespace (NIP-77): a NEG-OPEN replaces the reconciliation of the same id only.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass

from cluster.nostr.messages import (
    NegCloseCommand,
    NegInvalidCommand,
    NegMsgCommand,
    NegOpenCommand,
    neg_err_message,
    neg_msg_message,
)
from cluster.nostr.negentropy import Negentropy, Storage, StorageBuilder
from cluster.nostr.negentropy_codec import NegentropyError
from cluster.nostr.rejection import Prefix, Rejection, blocked, error, invalid, rate_limited
from cluster.relay.admission import QueriesWaiting
from cluster.relay.connection import Connection
from cluster.relay.freshness import reads_for
from cluster.relay.verbs.req import QUERY_FAILURES
from cluster.store.items import ItemList, fetch_items
from cluster.store.pool import statement_timeout

log = logging.getLogger(__name__)


class WorkerItems:
    """Items held by every open reconciliation of this worker process (one event loop)."""

    def __init__(self) -> None:
        self.held = 0

    def reserve(self, items: int, limit: int) -> bool:
        if self.held + items > limit:
            return False
        self.held += items
        return True

    def release(self, items: int) -> None:
        self.held = max(self.held - items, 0)


WORKER_ITEMS = WorkerItems()


@dataclass
class Session:
    negentropy: Negentropy
    items: int
    timer: asyncio.TimerHandle | None = None


_sessions: weakref.WeakKeyDictionary[Connection, dict[str, Session]] = weakref.WeakKeyDictionary()
"""Open reconciliations by connection: kept off the Connection, which knows no verb."""


def open_sessions(connection: Connection) -> dict[str, Session]:
    return _sessions.setdefault(connection, {})


def _end(connection: Connection, sub_id: str) -> bool:
    session = _sessions.get(connection, {}).pop(sub_id, None)
    if session is None:
        return False
    if session.timer is not None:
        session.timer.cancel()
    WORKER_ITEMS.release(session.items)
    return True


def drop_negentropy_sessions(connection: Connection) -> None:
    """The connection closed: free what its reconciliations held."""
    for sub_id in list(_sessions.get(connection, {})):
        _end(connection, sub_id)
    _sessions.pop(connection, None)


def _refuse(
    connection: Connection, sub_id: str, rejection: Rejection, max_records: int | None = None
) -> None:
    """NEG-ERR ends the reconciliation (NIP-77); `auth-required:` follows our challenge."""
    _end(connection, sub_id)
    if rejection.prefix is Prefix.AUTH_REQUIRED:
        connection.offer_auth()
    connection.send(neg_err_message(sub_id, rejection.text, max_records))


def _closed_text(connection: Connection, sub_id: str, reason: str) -> None:
    """NIP-77's `closed:` prefix, which is not one of NIP-01's (so not a Rejection)."""
    _end(connection, sub_id)
    connection.send(neg_err_message(sub_id, f"closed: {reason}"))


async def handle_neg_open(connection: Connection, command: NegOpenCommand) -> None:
    context = connection.context
    settings = context.settings.negentropy
    sub_id, flt = command.sub_id, command.filter
    _end(connection, sub_id)  # NIP-77: an open id is closed first
    if not settings.enabled:
        _refuse(connection, sub_id, blocked("negentropy (NIP-77) is disabled on this relay"))
        return
    if flt.search is not None:
        _refuse(connection, sub_id, invalid("search filters cannot be reconciled"))
        return
    refusal = await context.access.check_read(
        connection.access, (flt,)
    ) or context.budgets.refuse_reconciliation(connection.access)
    if refusal is not None:
        _refuse(connection, sub_id, refusal)
        return
    if len(open_sessions(connection)) >= settings.max_sessions_per_connection:
        limit = settings.max_sessions_per_connection
        _refuse(connection, sub_id, blocked(f"too many open reconciliations (max {limit})"))
        return
    hidden = context.access.count_hidden_kinds(connection.access, (flt,))[0]
    try:
        async with context.admission.slot(connection.access.rate_subject):
            with statement_timeout(settings.query_timeout_ms), reads_for(connection):
                items = await fetch_items(
                    context.store.reads,
                    flt,
                    int(time.time()),
                    hidden,
                    settings.max_items,
                    archive=context.store.archive,
                )
    except QueriesWaiting:
        _refuse(connection, sub_id, rate_limited("too many queries waiting"))
        return
    except QUERY_FAILURES as exc:
        log.warning("NEG-OPEN query failed: %s", exc)
        _refuse(connection, sub_id, error("could not read stored events"))
        return
    context.budgets.charge_items(connection.access, items.count)
    if items.count > settings.max_items:
        reason = blocked(f"this query is too big: more than {settings.max_items} events match")
        _refuse(connection, sub_id, reason, settings.max_items)
        return
    if not WORKER_ITEMS.reserve(items.count, settings.max_worker_items):
        _refuse(connection, sub_id, rate_limited("relay busy reconciling, retry later"))
        return
    try:
        negentropy = Negentropy(await _build(items), settings.frame_size_limit)
    except ValueError as exc:  # items not in order: a store bug, not the client's
        WORKER_ITEMS.release(items.count)
        log.error("NEG-OPEN items unusable: %s", exc)
        _refuse(connection, sub_id, error("could not prepare stored events"))
        return
    session = Session(negentropy, items.count)
    open_sessions(connection)[sub_id] = session
    await _answer(connection, sub_id, session, command.message)


async def _build(items: ItemList) -> Storage:
    """Seal the items a step at a time, letting the worker's other connections run between."""
    builder = StorageBuilder.from_big_endian(items.timestamps, items.ids)
    while not builder.step():
        await asyncio.sleep(0)
    return builder.storage()


async def handle_neg_msg(connection: Connection, command: NegMsgCommand) -> None:
    session = open_sessions(connection).get(command.sub_id)
    if session is None:
        _closed_text(connection, command.sub_id, f"no open reconciliation '{command.sub_id}'")
        return
    await _answer(connection, command.sub_id, session, command.message)


async def _answer(connection: Connection, sub_id: str, session: Session, message: bytes) -> None:
    """One server step; the reply waits for room in the client's queue (bounded, as REQ's)."""
    if session.timer is not None:
        session.timer.cancel()
        session.timer = None
    try:
        reply = session.negentropy.reconcile(message)
    except NegentropyError as exc:
        _refuse(connection, sub_id, invalid(str(exc)))
        return
    try:
        async with asyncio.timeout(connection.context.settings.limits.req_stall_timeout):
            await connection.wait_for_room()
    except TimeoutError:
        _closed_text(connection, sub_id, "reconciliation not read in time")
        return
    if connection.closing or open_sessions(connection).get(sub_id) is not session:
        return
    connection.send(neg_msg_message(sub_id, reply))
    idle = connection.context.settings.negentropy.idle_timeout
    session.timer = asyncio.get_running_loop().call_later(
        idle, _expire, weakref.ref(connection), sub_id, session
    )


def _expire(ref: weakref.ref[Connection], sub_id: str, session: Session) -> None:
    connection = ref()
    if connection is None or open_sessions(connection).get(sub_id) is not session:
        return
    idle = connection.context.settings.negentropy.idle_timeout
    _closed_text(connection, sub_id, f"no NEG-MSG for {idle:g} seconds")


async def handle_neg_close(connection: Connection, command: NegCloseCommand) -> None:
    """No answer (NIP-77); an id that is not open is ignored, as the session may have ended
    with a NEG-ERR the client had not yet read."""
    _end(connection, command.sub_id)


async def handle_neg_invalid(connection: Connection, command: NegInvalidCommand) -> None:
    _refuse(connection, command.sub_id, command.rejection)
