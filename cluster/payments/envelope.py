"""`dassie-rpc-01` envelopes, superjson-framed: the one wire format of the client and the node.

Every whole message is superjson (`{"json": …, "meta": {"values": …}}`), so big integers travel
exactly (docs/PAYMENTS.md). Encoding sends plain values (and `superjson.BigInt` markers);
decoding restores what the peer marked. Pure: no sockets here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec

from cluster.payments import superjson

PROTOCOL = "dassie-rpc-01"

RouteType = Literal["query", "mutation", "subscription"]


class EnvelopeError(ValueError):
    """A message that is not a superjson envelope; `request_id` names the request it answers
    when the JSON itself was readable, so that request can fail at once instead of timing out."""

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


def encode_request(request_id: str, route_type: RouteType, path: Sequence[str], input: Any) -> str:
    return _encode(
        {
            "protocol": PROTOCOL,
            "type": "request",
            "routeType": route_type,
            "id": request_id,
            "path": list(path),
            "input": input,
        }
    )


def encode_response(request_id: str, result: Mapping[str, Any]) -> str:
    """`result` is `{"type": "success", "data": …}` or `{"type": "error", "message": …}`."""
    return _encode({"protocol": PROTOCOL, "type": "response", "id": request_id, "result": result})


def decode_envelope(raw: str | bytes) -> Any:
    """The message a peer sent, superjson markers applied; EnvelopeError when unreadable."""
    try:
        envelope = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise EnvelopeError(f"invalid JSON: {exc}") from exc
    try:
        return superjson.decode_superjson(envelope, in_place=True)
    except superjson.SuperjsonError as exc:
        raise EnvelopeError(f"bad superjson: {exc}", _raw_id(envelope)) from exc


def _encode(message: dict[str, Any]) -> str:
    return superjson.dumps(message).decode()


def _raw_id(envelope: Any) -> str | None:
    if isinstance(envelope, dict) and isinstance(envelope.get("json"), dict):
        request_id = envelope["json"].get("id")
        return request_id if isinstance(request_id, str) else None
    return None
