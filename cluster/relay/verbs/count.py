"""COUNT (NIP-45): how many stored events match, under the same read access as REQ."""

from __future__ import annotations

import logging
import time

from cluster.nostr.messages import CountCommand, count_message
from cluster.nostr.rejection import error
from cluster.relay.connection import Connection
from cluster.relay.verbs.req import QUERY_FAILURES

log = logging.getLogger(__name__)


async def handle_count(connection: Connection, command: CountCommand) -> None:
    context = connection.context
    refusal = await context.access.check_read(connection.access, command.filters)
    if refusal is not None:
        connection.refuse_subscription(command.sub_id, refusal)
        return
    try:
        total = await context.store.count(command.filters, int(time.time()))
    except QUERY_FAILURES as exc:
        log.warning("COUNT query failed: %s", exc)
        connection.refuse_subscription(command.sub_id, error("could not count stored events"))
        return
    connection.send(count_message(command.sub_id, total))
