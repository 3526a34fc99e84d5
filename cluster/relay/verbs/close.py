"""CLOSE: end one of the connection's subscriptions."""

from __future__ import annotations

from cluster.nostr.messages import CloseCommand, notice_message
from cluster.relay.connection import Connection


async def handle_close(connection: Connection, command: CloseCommand) -> None:
    if connection.drop_subscription(command.sub_id) is None:
        connection.send(notice_message(f"invalid: no open subscription '{command.sub_id}'"))
