"""COUNT (NIP-45): how many stored events match, under the same read access as REQ: DMs are
counted only where the client may read every one of them (cluster/nostr/dm_access.py).

A filter with one tag value (reactions to a note, followers of a key) is answered with its
HyperLogLog registers too (`"hll"`), so a client can merge several relays' answers; filters that
no index narrows (`{}`, kinds only) on a large table get the planner's estimate, marked
`"approximate": true` (cluster/store/counts.py).

The count is a store query like a REQ's: it waits for a slot of the worker's QueryAdmission
(fair across client addresses; a full queue is refused with `rate-limited:`) and runs under
database.count_timeout_ms (past it: CLOSED `error:`), so COUNT floods cannot take every pooled
connection or hold one for long.
"""

from __future__ import annotations

import logging
import time

from cluster.nostr import hll
from cluster.nostr.messages import CountCommand, count_message
from cluster.nostr.rejection import error, rate_limited
from cluster.relay.admission import QueriesWaiting
from cluster.relay.connection import Connection
from cluster.relay.freshness import reads_for
from cluster.relay.verbs.req import QUERY_FAILURES
from cluster.store.pool import statement_timeout

log = logging.getLogger(__name__)


async def handle_count(connection: Connection, command: CountCommand) -> None:
    context = connection.context
    refusal = await context.access.check_read(
        connection.access, command.filters
    ) or context.budgets.refuse_count(connection.access, command.filters)
    if refusal is not None:
        connection.refuse_subscription(command.sub_id, refusal)
        return
    hidden = context.access.count_hidden_kinds(connection.access, command.filters)
    search_config = context.settings.search.config
    try:
        async with context.admission.slot(connection.access.rate_subject):
            timeout = statement_timeout(context.settings.database.count_timeout_ms)
            with timeout, reads_for(connection):
                answer = await context.store.count_answer(
                    command.filters, int(time.time()), hidden, search_config
                )
    except QueriesWaiting:
        connection.refuse_subscription(command.sub_id, rate_limited("too many queries waiting"))
        return
    except QUERY_FAILURES as exc:
        log.warning("COUNT query failed: %s", exc)
        connection.refuse_subscription(command.sub_id, error("could not count stored events"))
        return
    registers = None if answer.hll is None else hll.encode(answer.hll)
    message = count_message(command.sub_id, answer.count, registers, approximate=answer.approximate)
    connection.send(message)
