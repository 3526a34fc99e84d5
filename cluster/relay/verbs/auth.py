"""AUTH (NIP-42): a signed kind-22242 event naming our challenge and URL authenticates its key."""

from __future__ import annotations

import time

from cluster.nostr.auth import check_auth_event
from cluster.nostr.messages import AuthCommand
from cluster.relay.connection import Connection


async def handle_auth(connection: Connection, command: AuthCommand) -> None:
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
        connection.ok(event.id, False, rejection.text)
        return
    connection.access.authenticate(event.pubkey)
    connection.ok(event.id, True, "")
