"""Client→relay message decoding and relay→client message encoding (NIP-01, 42, 45, 77).

Decoding returns a typed command or a typed refusal; it never raises for bad input, so the
connection can answer and carry on.
"""

from __future__ import annotations

import binascii
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


class NegOpenCommand(msgspec.Struct, frozen=True):
    """NIP-77: open (or replace) reconciliation `sub_id` over one filter's stored events."""

    sub_id: str
    filter: Filter
    message: bytes  # the client's initial negentropy message, hex-decoded


class NegMsgCommand(msgspec.Struct, frozen=True):
    sub_id: str
    message: bytes


class NegCloseCommand(msgspec.Struct, frozen=True):
    sub_id: str


class NegInvalidCommand(msgspec.Struct, frozen=True):
    """A NEG-* message whose subscription id we could read but which cannot be acted on: the
    handler answers NEG-ERR and ends that id's reconciliation (a command, not a refusal, so
    the NEG verb module owns every NEG-ERR)."""

    sub_id: str
    rejection: Rejection


Command = (
    EventCommand
    | ReqCommand
    | CountCommand
    | CloseCommand
    | AuthCommand
    | NegOpenCommand
    | NegMsgCommand
    | NegCloseCommand
    | NegInvalidCommand
)

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


def _neg_sub_id(message: list[Any], limits: MessageLimits) -> str | Command | Refusal:
    sub_id = _subscription_id(message, limits)
    if isinstance(sub_id, ClosedRefusal):
        return NegInvalidCommand(sub_id.sub_id, sub_id.rejection)  # too long: NEG-ERR, not CLOSED
    return sub_id


def _neg_payload(sub_id: str, text: Any) -> bytes | NegInvalidCommand:
    """The hex-encoded negentropy message (NIP-77), at least its version byte."""
    if not isinstance(text, str) or not text:
        return NegInvalidCommand(sub_id, invalid("negentropy message must be a hex string"))
    try:
        return binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        return NegInvalidCommand(sub_id, invalid("negentropy message is not valid hex"))


def _parse_neg_open_message(message: list[Any], limits: MessageLimits) -> Command | Refusal:
    sub_id = _neg_sub_id(message, limits)
    if not isinstance(sub_id, str):
        return sub_id
    if len(message) != 4:
        reason = "NEG-OPEN takes a subscription id, one filter and a message"
        return NegInvalidCommand(sub_id, invalid(reason))
    try:
        flt = parse_filter(message[2], limits.filters)
    except FilterError as exc:
        return NegInvalidCommand(sub_id, Rejection(exc.prefix, str(exc)))
    payload = _neg_payload(sub_id, message[3])
    if isinstance(payload, NegInvalidCommand):
        return payload
    return NegOpenCommand(sub_id, flt, payload)


def _parse_neg_msg_message(message: list[Any], limits: MessageLimits) -> Command | Refusal:
    sub_id = _neg_sub_id(message, limits)
    if not isinstance(sub_id, str):
        return sub_id
    if len(message) != 3:
        return NegInvalidCommand(sub_id, invalid("NEG-MSG takes a subscription id and a message"))
    payload = _neg_payload(sub_id, message[2])
    if isinstance(payload, NegInvalidCommand):
        return payload
    return NegMsgCommand(sub_id, payload)


def _parse_neg_close_message(message: list[Any], limits: MessageLimits) -> Command | Refusal:
    sub_id = _neg_sub_id(message, limits)
    if not isinstance(sub_id, str):
        return sub_id
    if len(message) != 2:
        return NegInvalidCommand(sub_id, invalid("NEG-CLOSE takes exactly one subscription id"))
    return NegCloseCommand(sub_id)


_PARSERS = {
    "EVENT": _parse_event_message,
    "REQ": _parse_req_message,
    "COUNT": _parse_count_message,
    "CLOSE": _parse_close_message,
    "AUTH": _parse_auth_message,
    "NEG-OPEN": _parse_neg_open_message,
    "NEG-MSG": _parse_neg_msg_message,
    "NEG-CLOSE": _parse_neg_close_message,
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


def count_message(
    sub_id: str, count: int, hll: str | None = None, *, approximate: bool = False
) -> bytes:
    """NIP-45's answer; `hll` (512 hex digits) and `approximate` only when they apply."""
    answer: dict[str, object] = {"count": count}
    if approximate:
        answer["approximate"] = True
    if hll is not None:
        answer["hll"] = hll
    return orjson.dumps(["COUNT", sub_id, answer])


def neg_msg_message(sub_id: str, message: bytes) -> bytes:
    """NIP-77 NEG-MSG: the negentropy message, hex-encoded."""
    return orjson.dumps(["NEG-MSG", sub_id, message.hex()])


def neg_err_message(sub_id: str, reason: str, max_records: int | None = None) -> bytes:
    """NIP-77 NEG-ERR; a `blocked:` answer may name the most records the relay will process."""
    if max_records is None:
        return orjson.dumps(["NEG-ERR", sub_id, reason])
    return orjson.dumps(["NEG-ERR", sub_id, reason, max_records])


def auth_challenge_message(challenge: str) -> bytes:
    return orjson.dumps(["AUTH", challenge])


def event_message(sub_id: str, event_json: bytes) -> bytes:
    """Splice the event's already-encoded JSON into the envelope: no re-encoding per recipient."""
    return b'["EVENT",' + orjson.dumps(sub_id) + b"," + event_json + b"]"
