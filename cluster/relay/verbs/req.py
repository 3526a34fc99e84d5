"""REQ: stored events newest first, EOSE, then live events; no gap and no repeat between them.

The subscription is registered before the query, so live events that arrive meanwhile are held
on the connection and sent after EOSE, unless the stored results already carried them.
"""

from __future__ import annotations

import logging
import time

import psycopg
from psycopg_pool import PoolTimeout

from cluster.nostr.event import id_of_encoded
from cluster.nostr.messages import ReqCommand, eose_message, event_message
from cluster.nostr.rejection import Rejection, blocked, error
from cluster.relay.connection import Connection
from cluster.relay.subscriptions import Subscription
from cluster.store.events import FANOUT_GRACE

log = logging.getLogger(__name__)

QUERY_FAILURES = (psycopg.Error, PoolTimeout, OSError, TimeoutError)
"""What a failed read looks like: the client gets CLOSED `error:` and the connection lives on."""


async def handle_req(connection: Connection, command: ReqCommand) -> None:
    context = connection.context
    sub_id = command.sub_id
    connection.drop_subscription(sub_id)  # NIP-01: a REQ overwrites its id's subscription
    refusal = await context.access.check_read(connection.access, command.filters)
    if refusal is None:
        refusal = _over_subscription_limit(connection)
    if refusal is not None:
        connection.refuse_subscription(sub_id, refusal)
        return
    subscription = Subscription(connection, sub_id, command.filters)
    connection.add_subscription(subscription)
    try:
        stored = await context.store.query_rows(command.filters, int(time.time()))
    except QUERY_FAILURES as exc:
        log.warning("REQ query failed: %s", exc)
        connection.drop_subscription(sub_id)
        connection.refuse_subscription(sub_id, error("could not query stored events"))
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


def _over_subscription_limit(connection: Connection) -> Rejection | None:
    limit = connection.context.settings.limits.max_subscriptions
    if len(connection.subscriptions) >= limit:
        return blocked(f"too many open subscriptions (max {limit})")
    return None
