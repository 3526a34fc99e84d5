"""`relay-cluster publish`: sign an event (optionally paid) and send it to a relay."""

from __future__ import annotations

import aiohttp
import orjson

from cluster.nostr.signing import Signer, event_frame
from cluster.payments.claims import payment_tag


async def publish(
    relay_url: str,
    secret: str,
    kind: int,
    content: str,
    tags: list[list[str]],
    payment: tuple[str, int, int, str] | None,
    timeout: float = 10.0,
) -> tuple[bool, str]:
    """Returns (accepted, the OK message as JSON). `payment` = (channel, amount, nonce, currency)
    signed with the same secret (the channel's sender key)."""
    if payment is not None:
        channel_id, amount, nonce, currency = payment
        tags = [*tags, payment_tag(secret, channel_id, amount, nonce, currency)]
    event = Signer(secret).sign(kind, content, tags)
    async with aiohttp.ClientSession() as session, session.ws_connect(relay_url) as ws:
        await ws.send_str(event_frame(event))
        while True:
            message = orjson.loads(await ws.receive_str(timeout=timeout))
            if message[0] == "OK" and message[1] == event.id:
                return bool(message[2]), orjson.dumps(message).decode()
