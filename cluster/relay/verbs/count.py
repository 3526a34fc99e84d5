"""COUNT (NIP-45): how many stored events match, under the same read access as REQ: DMs are
counted only where the client may read every one of them (cluster/nostr/dm_access.py)."""

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
        hidden = context.access.count_hidden_kinds(connection.access, command.filters)
        total = await context.store.count(command.filters, int(time.time()), hidden)
    except QUERY_FAILURES as exc:
        log.warning("COUNT query failed: %s", exc)
        connection.refuse_subscription(command.sub_id, error("could not count stored events"))
        return
    connection.send(count_message(command.sub_id, total))
