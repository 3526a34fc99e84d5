"""Client→relay message decoding and relay→client message encoding (NIP-01, NIP-42, NIP-45).

Decoding returns a typed command or a typed refusal; it never raises for bad input, so the
connection can answer and carry on.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from cluster.nostr.event import Event, event_from_object
from cluster.nostr.filters import Filter, FilterError, FilterLimits, parse_filter
from cluster.nostr.rejection import Rejection, invalid


class MessageLimits(msgspec.Struct, frozen=True):
    max_message_bytes: int = 131072
    max_filters: int = 10
    max_subid_length: int = 64
    filters: FilterLimits = FilterLimits()


# ---- commands -------------------------------------------------------------------------------


class EventCommand(msgspec.Struct, frozen=True):
    event: Event


class ReqCommand(msgspec.Struct, frozen=True):
    sub_id: str
    filters: tuple[Filter, ...]


class CountCommand(msgspec.Struct, frozen=True):
    sub_id: str
    filters: tuple[Filter, ...]


class CloseCommand(msgspec.Struct, frozen=True):
    sub_id: str


class AuthCommand(msgspec.Struct, frozen=True):
    event: Event


Command = EventCommand | ReqCommand | CountCommand | CloseCommand | AuthCommand

# ---- refusals (what to answer when a message cannot be acted on) ------------------------------


class NoticeRefusal(msgspec.Struct, frozen=True):
    """Answer with NOTICE: the message cannot be tied to an event or a subscription."""

    message: str


class OkRefusal(msgspec.Struct, frozen=True):
    """Answer with OK false: an EVENT whose id we could read but whose content is wrong."""

    event_id: str
    rejection: Rejection


class ClosedRefusal(msgspec.Struct, frozen=True):
    """Answer with CLOSED: a REQ/COUNT whose subscription id we could read."""

    sub_id: str
    rejection: Rejection


Refusal = NoticeRefusal | OkRefusal | ClosedRefusal

_json_decoder = msgspec.json.Decoder()


def decode_client_message(raw: bytes | str, limits: MessageLimits) -> Command | Refusal:
    """Decode and validate one WebSocket message, size limit first."""
    if _byte_length_exceeds(raw, limits.max_message_bytes):
        return NoticeRefusal(f"invalid: message exceeds {limits.max_message_bytes} bytes")
    try:
        message = _json_decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, UnicodeEncodeError):
        return NoticeRefusal("invalid: message is not valid JSON")
    except RecursionError:
        return NoticeRefusal("invalid: message is nested too deeply")
    if not isinstance(message, list) or not message or not isinstance(message[0], str):
        return NoticeRefusal("invalid: message must be a JSON array starting with a verb")
    verb = message[0]
    parser = _PARSERS.get(verb)
    if parser is None:
        return NoticeRefusal(f"invalid: unknown message type '{verb[:16]}'")
    return parser(message, limits)


def _byte_length_exceeds(raw: bytes | str, limit: int) -> bool:
    """The limit is in UTF-8 bytes (NIP-11 max_message_length); text frames arrive as str."""
    if isinstance(raw, bytes) or len(raw) > limit:
        return len(raw) > limit
    # A str of n characters is at most 4n bytes: encode only when it could be over.
    return len(raw) * 4 > limit and len(raw.encode("utf-8", "surrogatepass")) > limit


def _parse_event_message(message: list[Any], limits: MessageLimits) -> Command | Refusal:
    if len(message) != 2:
        return NoticeRefusal("invalid: EVENT takes exactly one event")
    obj = message[1]
    try:
        event = event_from_object(obj)
    except msgspec.ValidationError as exc:
        event_id = obj.get("id") if isinstance(obj, dict) else None
        reason = f"malformed event: {exc}"
        if isinstance(event_id, str) and 0 < len(event_id) <= 64:
            return OkRefusal(event_id, invalid(reason))
        return NoticeRefusal(f"invalid: {reason}")
    return EventCommand(event)


def _parse_auth_message(message: list[Any], limits: MessageLimits) -> Command | Refusal:
    if len(message) != 2:
        return NoticeRefusal("invalid: AUTH takes exactly one event")
    try:
        return AuthCommand(event_from_object(message[1]))
    except msgspec.ValidationError as exc:
        return NoticeRefusal(f"invalid: malformed AUTH event: {exc}")


def _subscription_id(message: list[Any], limits: MessageLimits) -> str | Refusal:
    if len(message) < 2 or not isinstance(message[1], str):
        return NoticeRefusal(f"invalid: {message[0]} needs a subscription id string")
    sub_id = message[1]
    if not sub_id:
        return NoticeRefusal("invalid: subscription id must not be empty")
    if len(sub_id) > limits.max_subid_length:
        return ClosedRefusal(
            sub_id,
            invalid(f"subscription id longer than {limits.max_subid_length} characters"),
        )
    return sub_id


def _parse_filters(
    message: list[Any], limits: MessageLimits
) -> tuple[str, tuple[Filter, ...]] | Refusal:
    sub_id = _subscription_id(message, limits)
    if not isinstance(sub_id, str):
        return sub_id
    raw_filters = message[2:]
    if not raw_filters:
        return ClosedRefusal(sub_id, invalid("at least one filter is required"))
    if len(raw_filters) > limits.max_filters:
        return ClosedRefusal(sub_id, invalid(f"more than {limits.max_filters} filters"))
    try:
        filters = tuple(parse_filter(raw, limits.filters) for raw in raw_filters)
    except FilterError as exc:
        return ClosedRefusal(sub_id, Rejection(exc.prefix, str(exc)))
    return sub_id, filters


def _parse_req_message(message: list[Any], limits: MessageLimits) -> Command | Refusal:
    parsed = _parse_filters(message, limits)
    if not isinstance(parsed, tuple):
        return parsed
    return ReqCommand(*parsed)


def _parse_count_message(message: list[Any], limits: MessageLimits) -> Command | Refusal:
    parsed = _parse_filters(message, limits)
    if not isinstance(parsed, tuple):
        return parsed
    return CountCommand(*parsed)


def _parse_close_message(message: list[Any], limits: MessageLimits) -> Command | Refusal:
    if len(message) != 2:
        return NoticeRefusal("invalid: CLOSE takes exactly one subscription id")
    sub_id = _subscription_id(message, limits)
    if not isinstance(sub_id, str):
        return sub_id
    return CloseCommand(sub_id)


_PARSERS = {
    "EVENT": _parse_event_message,
    "REQ": _parse_req_message,
    "COUNT": _parse_count_message,
    "CLOSE": _parse_close_message,
    "AUTH": _parse_auth_message,
}

# ---- relay → client -------------------------------------------------------------------------


def ok_message(event_id: str, accepted: bool, message: str = "") -> bytes:
    return orjson.dumps(["OK", event_id, accepted, message])


def eose_message(sub_id: str) -> bytes:
    return orjson.dumps(["EOSE", sub_id])


def closed_message(sub_id: str, message: str) -> bytes:
    return orjson.dumps(["CLOSED", sub_id, message])


def notice_message(message: str) -> bytes:
    return orjson.dumps(["NOTICE", message])


def count_message(sub_id: str, count: int) -> bytes:
    return orjson.dumps(["COUNT", sub_id, {"count": count}])


def auth_challenge_message(challenge: str) -> bytes:
    return orjson.dumps(["AUTH", challenge])


def event_message(sub_id: str, event_json: bytes) -> bytes:
    """Splice the event's already-encoded JSON into the envelope: no re-encoding per recipient."""
    return b'["EVENT",' + orjson.dumps(sub_id) + b"," + event_json + b"]"
