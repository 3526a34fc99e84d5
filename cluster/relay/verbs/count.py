"""COUNT (NIP-45): how many stored events match, under the same read access as REQ: DMs are
counted only where the client may read every one of them (cluster/nostr/dm_access.py).

The count is a store query like a REQ's: it waits for a slot of the worker's QueryAdmission
(fair across client addresses; a full queue is refused with `rate-limited:`) and runs under
database.count_timeout_ms (past it: CLOSED `error:`), so COUNT floods cannot take every pooled
connection or hold one for long.
"""

from __future__ import annotations

import logging
import time

from cluster.nostr.messages import CountCommand, count_message
from cluster.nostr.rejection import error, rate_limited
from cluster.relay.admission import QueriesWaiting
from cluster.relay.connection import Connection
from cluster.relay.verbs.req import QUERY_FAILURES
from cluster.store.pool import statement_timeout

log = logging.getLogger(__name__)


async def handle_count(connection: Connection, command: CountCommand) -> None:
    context = connection.context
    refusal = await context.access.check_read(connection.access, command.filters)
    if refusal is not None:
        connection.refuse_subscription(command.sub_id, refusal)
        return
    hidden = context.access.count_hidden_kinds(connection.access, command.filters)
    try:
        async with context.admission.slot(connection.access.rate_subject):
            with statement_timeout(context.settings.database.count_timeout_ms):
                total = await context.store.count(command.filters, int(time.time()), hidden)
    except QueriesWaiting:
        connection.refuse_subscription(command.sub_id, rate_limited("too many queries waiting"))
        return
    except QUERY_FAILURES as exc:
        log.warning("COUNT query failed: %s", exc)
        connection.refuse_subscription(command.sub_id, error("could not count stored events"))
        return
    connection.send(count_message(command.sub_id, total))
