"""Client→relay decoding (every verb, every refusal) and relay→client encoding."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
import pytest

from cluster.nostr.event import encode_event
from cluster.nostr.filters import Filter, FilterLimits
from cluster.nostr.messages import (
    AuthCommand,
    CloseCommand,
    ClosedRefusal,
    CountCommand,
    EventCommand,
    MessageLimits,
    NoticeRefusal,
    OkRefusal,
    ReqCommand,
    auth_challenge_message,
    closed_message,
    count_message,
    decode_client_message,
    eose_message,
    event_message,
    notice_message,
    ok_message,
)
from cluster.nostr.rejection import Prefix, Rejection
from cluster.nostr.signing import Signer

LIMITS = MessageLimits(
    max_message_bytes=4096,
    max_filters=3,
    max_subid_length=16,
    filters=FilterLimits(max_limit=50, default_limit=10, max_values=4),
)
EVENT = Signer().sign(1, "hello", [["t", "x"]], created_at=1_700_000_000)
EVENT_OBJ = msgspec.to_builtins(EVENT)
PK = EVENT.pubkey


def decode(message: Any, limits: MessageLimits = LIMITS) -> Any:
    return decode_client_message(orjson.dumps(message), limits)


# ---- commands --------------------------------------------------------------------------------


def test_event() -> None:
    assert decode(["EVENT", EVENT_OBJ]) == EventCommand(EVENT)


def test_event_from_str_input() -> None:
    assert decode_client_message(orjson.dumps(["EVENT", EVENT_OBJ]).decode(), LIMITS) == (
        EventCommand(EVENT)
    )


def test_auth() -> None:
    assert decode(["AUTH", EVENT_OBJ]) == AuthCommand(EVENT)


def test_req_with_several_filters() -> None:
    command = decode(["REQ", "sub", {"authors": [PK]}, {"kinds": [1], "limit": 500}, {}])
    assert command == ReqCommand(
        "sub",
        (
            Filter(authors=frozenset({PK}), limit=10),
            Filter(kinds=frozenset({1}), limit=50),
            Filter(limit=10),
        ),
    )


def test_count() -> None:
    assert decode(["COUNT", "c", {"#t": ["x"]}]) == CountCommand(
        "c", (Filter(tags=(("t", frozenset({"x"})),), limit=10),)
    )


def test_close() -> None:
    assert decode(["CLOSE", "sub"]) == CloseCommand("sub")


def test_sub_id_at_the_limit_is_accepted() -> None:
    assert decode(["CLOSE", "s" * 16]) == CloseCommand("s" * 16)
    assert decode(["REQ", "é" * 16, {}]) == ReqCommand("é" * 16, (Filter(limit=10),))


def test_max_filters_is_accepted() -> None:
    command = decode(["REQ", "s", {}, {}, {}])
    assert isinstance(command, ReqCommand) and len(command.filters) == 3


def test_message_exactly_at_the_size_limit_is_decoded() -> None:
    raw = orjson.dumps(["CLOSE", "x"])
    assert decode_client_message(raw, MessageLimits(max_message_bytes=len(raw))) == (
        CloseCommand("x")
    )


# ---- NOTICE refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "notice"),
    [
        (b"", "invalid: message is not valid JSON"),
        (b"[", "invalid: message is not valid JSON"),
        (b"not json", "invalid: message is not valid JSON"),
        (b'["CLOSE","x"] trailing', "invalid: message is not valid JSON"),
        (b'["CLOSE","\xff"]', "invalid: message is not valid JSON"),
        ("[" * 2000 + "]" * 2000, "invalid: message is nested too deeply"),
        (
            b'["REQ","s",' + b"[" * 1500 + b"]" * 1500 + b"]",
            "invalid: message is nested too deeply",
        ),
        (b"{}", "invalid: message must be a JSON array starting with a verb"),
        (b'"EVENT"', "invalid: message must be a JSON array starting with a verb"),
        (b"[]", "invalid: message must be a JSON array starting with a verb"),
        (b"[1]", "invalid: message must be a JSON array starting with a verb"),
        (b"[null,{}]", "invalid: message must be a JSON array starting with a verb"),
        (b'["PUBLISH",{}]', "invalid: unknown message type 'PUBLISH'"),
        (b'["event",{}]', "invalid: unknown message type 'event'"),
        (b'["' + b"X" * 40 + b'"]', "invalid: unknown message type '" + "X" * 16 + "'"),
        (b'["EVENT"]', "invalid: EVENT takes exactly one event"),
        (b'["EVENT",{},{}]', "invalid: EVENT takes exactly one event"),
        (b'["AUTH"]', "invalid: AUTH takes exactly one event"),
        (b'["AUTH","challenge","x"]', "invalid: AUTH takes exactly one event"),
        (b'["CLOSE"]', "invalid: CLOSE takes exactly one subscription id"),
        (b'["CLOSE","a","b"]', "invalid: CLOSE takes exactly one subscription id"),
        (b'["CLOSE",1]', "invalid: CLOSE needs a subscription id string"),
        (b'["CLOSE",""]', "invalid: subscription id must not be empty"),
        (b'["REQ"]', "invalid: REQ needs a subscription id string"),
        (b'["REQ",{}]', "invalid: REQ needs a subscription id string"),
        (b'["REQ",null,{}]', "invalid: REQ needs a subscription id string"),
        (b'["REQ","",{}]', "invalid: subscription id must not be empty"),
        (b'["COUNT",5,{}]', "invalid: COUNT needs a subscription id string"),
    ],
    ids=repr,
)
def test_notice_refusals(raw: bytes | str, notice: str) -> None:
    assert decode_client_message(raw, LIMITS) == NoticeRefusal(notice)


def test_oversize_bytes_refused_before_parsing() -> None:
    raw = orjson.dumps(["CLOSE", "x" * 5000])
    assert decode_client_message(raw, LIMITS) == NoticeRefusal(
        "invalid: message exceeds 4096 bytes"
    )
    # Not even valid JSON: the size check comes first.
    assert decode_client_message(b"[" * 4097, LIMITS) == NoticeRefusal(
        "invalid: message exceeds 4096 bytes"
    )


def test_oversize_is_measured_in_bytes_for_text_frames() -> None:
    """aiohttp hands TEXT frames over as str: the byte limit must hold for their UTF-8 size."""
    text = '["CLOSE","' + "é" * 60 + '"]'  # 72 characters, 132 bytes
    assert len(text) <= 100 < len(text.encode())
    assert decode_client_message(text, MessageLimits(max_message_bytes=100)) == NoticeRefusal(
        "invalid: message exceeds 100 bytes"
    )


def test_malformed_event_without_readable_id_is_a_notice() -> None:
    for obj in ({**EVENT_OBJ, "id": 5, "kind": "1"}, "event", [1, 2], {"kind": "x"}):
        refusal = decode(["EVENT", obj])
        assert isinstance(refusal, NoticeRefusal), obj
        assert refusal.message.startswith("invalid: malformed event: ")
    long_id = decode(["EVENT", {**EVENT_OBJ, "id": "a" * 65, "kind": "1"}])
    assert isinstance(long_id, NoticeRefusal)
    empty_id = decode(["EVENT", {**EVENT_OBJ, "id": "", "kind": "1"}])
    assert isinstance(empty_id, NoticeRefusal)


def test_malformed_auth_is_a_notice() -> None:
    refusal = decode(["AUTH", {**EVENT_OBJ, "tags": "x"}])
    assert isinstance(refusal, NoticeRefusal)
    assert refusal.message.startswith("invalid: malformed AUTH event: ")


# ---- OK refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", "1"),
        ("created_at", "now"),
        ("tags", [["t", 1]]),
        ("tags", "x"),
        ("content", None),
        ("sig", 5),
        ("pubkey", None),
    ],
    ids=repr,
)
def test_malformed_event_with_readable_id_is_ok_false(field: str, value: Any) -> None:
    refusal = decode(["EVENT", {**EVENT_OBJ, field: value}])
    assert isinstance(refusal, OkRefusal)
    assert refusal.event_id == EVENT.id
    assert refusal.rejection.prefix is Prefix.INVALID
    assert refusal.rejection.message.startswith("malformed event: ")
    assert field in refusal.rejection.message


def test_missing_field_is_ok_false() -> None:
    obj = dict(EVENT_OBJ)
    del obj["sig"]
    refusal = decode(["EVENT", obj])
    assert isinstance(refusal, OkRefusal) and refusal.event_id == EVENT.id
    assert "sig" in refusal.rejection.message


# ---- CLOSED refusals -------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["REQ", "COUNT"])
@pytest.mark.parametrize(
    ("args", "sub_id", "text"),
    [
        (["s" * 17, {}], "s" * 17, "invalid: subscription id longer than 16 characters"),
        (["s"], "s", "invalid: at least one filter is required"),
        (["s", {}, {}, {}, {}], "s", "invalid: more than 3 filters"),
        (["s", {"sort": "x"}], "s", "unsupported: unsupported filter field 'sort'"),
        (
            ["s", {}, {"#ab": ["x"]}],
            "s",
            "invalid: '#ab': tag filters are '#' and one letter a-z or A-Z",
        ),
        (
            ["s", {}, {"kinds": [True]}],
            "s",
            "invalid: 'kinds' must hold integers between 0 and 65535",
        ),
        (["s", {"#p": ["a"] * 5}], "s", "invalid: '#p' has more than 4 values"),
        (["s", []], "s", "invalid: a filter must be a JSON object"),
        (["s", {"limit": -5}], "s", "invalid: 'limit' must be a non-negative integer"),
    ],
    ids=repr,
)
def test_closed_refusals(verb: str, args: list[Any], sub_id: str, text: str) -> None:
    refusal = decode([verb, *args])
    assert isinstance(refusal, ClosedRefusal)
    assert refusal.sub_id == sub_id
    assert refusal.rejection.text == text


def test_close_with_too_long_sub_id_is_closed() -> None:
    assert decode(["CLOSE", "s" * 17]) == ClosedRefusal(
        "s" * 17, Rejection(Prefix.INVALID, "subscription id longer than 16 characters")
    )


# ---- relay → client --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (ok_message("ab" * 32, True), ["OK", "ab" * 32, True, ""]),
        (
            ok_message("ab" * 32, False, "duplicate: already have it"),
            ["OK", "ab" * 32, False, "duplicate: already have it"],
        ),
        (eose_message("sub"), ["EOSE", "sub"]),
        (closed_message("sub", "invalid: nope"), ["CLOSED", "sub", "invalid: nope"]),
        (notice_message('quote " and \\ and \n'), ["NOTICE", 'quote " and \\ and \n']),
        (count_message("c", 42), ["COUNT", "c", {"count": 42}]),
        (auth_challenge_message("chal"), ["AUTH", "chal"]),
    ],
    ids=repr,
)
def test_encoders(encoded: bytes, expected: list[Any]) -> None:
    assert isinstance(encoded, bytes)
    assert orjson.loads(encoded) == expected


def test_encoders_exact_bytes() -> None:
    assert ok_message("x", True) == b'["OK","x",true,""]'
    assert eose_message("s") == b'["EOSE","s"]'
    assert closed_message("s", "m") == b'["CLOSED","s","m"]'
    assert notice_message("m") == b'["NOTICE","m"]'
    assert count_message("s", 0) == b'["COUNT","s",{"count":0}]'


@pytest.mark.parametrize("sub_id", ["sub", 'q"uote', "日本", "a\\b"])
def test_event_message_splices_the_given_bytes(sub_id: str) -> None:
    event_json = encode_event(EVENT)
    message = event_message(sub_id, event_json)
    assert message == b'["EVENT",' + orjson.dumps(sub_id) + b"," + event_json + b"]"
    assert orjson.loads(message) == ["EVENT", sub_id, EVENT_OBJ]
    # Whatever bytes are given are spliced untouched, key order and spacing included.
    odd = b'{ "z" : 1 ,"a":[ ] }'
    assert event_message(sub_id, odd).endswith(b"," + odd + b"]")
    assert event_message(sub_id, odd).count(odd) == 1
