"""decode_client_message on hostile input: it never raises and always answers something sendable.

Whatever arrives (bytes, text, JSON of any shape, deep nesting, huge numbers, mutated valid
messages), the result is a typed command or a typed refusal, and every refusal renders into a
relay→client message with a NIP-01 prefix.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.nostr.filters import FilterLimits
from cluster.nostr.messages import (
    AuthCommand,
    CloseCommand,
    ClosedRefusal,
    CountCommand,
    EventCommand,
    MessageLimits,
    NegCloseCommand,
    NegInvalidCommand,
    NegMsgCommand,
    NegOpenCommand,
    NoticeRefusal,
    OkRefusal,
    ReqCommand,
    closed_message,
    decode_client_message,
    notice_message,
    ok_message,
)
from cluster.nostr.rejection import Prefix
from cluster.nostr.signing import Signer

LIMITS = MessageLimits(
    max_message_bytes=16384,
    max_filters=4,
    max_subid_length=64,
    filters=FilterLimits(max_limit=100, default_limit=20, max_values=8),
)
COMMANDS = (
    EventCommand,
    ReqCommand,
    CountCommand,
    CloseCommand,
    AuthCommand,
    NegOpenCommand,
    NegMsgCommand,
    NegCloseCommand,
    NegInvalidCommand,  # NIP-77's own refusal: answered NEG-ERR by the verb
)
REFUSALS = (NoticeRefusal, OkRefusal, ClosedRefusal)
PREFIXES = tuple(f"{prefix.value}: " for prefix in Prefix)
VERBS = ["EVENT", "REQ", "COUNT", "CLOSE", "AUTH", "NEG-OPEN", "NEG-MSG", "NEG-CLOSE"]
KEYS = ["id", "pubkey", "created_at", "kind", "tags", "content", "sig", "ids", "authors"]
KEYS += ["kinds", "since", "until", "limit", "#e", "#p", "#"]
FILTER_KEYS = ["ids", "authors", "kinds", "since", "until", "limit", "#e", "#", "#ab", "search"]
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SIGNER = Signer()


def check(raw: bytes | str) -> None:
    """The contract: a command or a refusal, and every refusal renders into a message."""
    result = decode_client_message(raw, LIMITS)
    assert isinstance(result, COMMANDS + REFUSALS), result
    if isinstance(result, NoticeRefusal):
        assert result.message.startswith(PREFIXES)
        notice_message(result.message)
    elif isinstance(result, OkRefusal):
        assert 0 < len(result.event_id) <= 64
        ok_message(result.event_id, False, result.rejection.text)
    elif isinstance(result, ClosedRefusal):
        assert len(result.sub_id) > 0
        closed_message(result.sub_id, result.rejection.text)
    elif isinstance(result, ReqCommand | CountCommand):
        assert 1 <= len(result.filters) <= LIMITS.max_filters
        assert 0 < len(result.sub_id) <= LIMITS.max_subid_length
        assert all(0 <= flt.limit <= LIMITS.filters.max_limit for flt in result.filters)
    elif isinstance(result, CloseCommand):
        assert 0 < len(result.sub_id) <= LIMITS.max_subid_length


# ---- strategies -----------------------------------------------------------------------------

hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-(10**300), max_value=10**300),
    st.sampled_from([0, -1, 2**53 - 1, 2**53, 2**63 - 1, 2**63, 2**64, -(2**63) - 1]),
    st.floats(allow_nan=False, allow_infinity=False),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=80), hex64)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(
            st.one_of(
                st.sampled_from(KEYS),
                st.text(max_size=8),
            ),
            children,
            max_size=8,
        ),
    ),
    max_leaves=40,
)
tags = st.lists(st.lists(st.one_of(st.text(max_size=40), hex64), max_size=4), max_size=6)
# Well-typed events (most reach EventCommand), then the same with any field replaced or missing.
event_shaped = st.fixed_dictionaries(
    {
        "id": st.one_of(hex64, st.text(max_size=70)),
        "pubkey": hex64,
        "created_at": st.integers(min_value=-1, max_value=2**64),
        "kind": st.integers(min_value=-1, max_value=70000),
        "tags": tags,
        "content": st.text(max_size=200),
        "sig": st.one_of(st.binary(min_size=64, max_size=64).map(bytes.hex), st.text(max_size=130)),
    }
)
event_like = st.one_of(
    event_shaped,
    st.tuples(event_shaped, st.sampled_from(KEYS[:7]), st.one_of(json_values, st.just(...))).map(
        lambda p: {k: v for k, v in {**p[0], p[1]: p[2]}.items() if v is not ...}
    ),
    st.dictionaries(st.sampled_from(KEYS[:7]), json_values),
)
filter_shaped = st.fixed_dictionaries(
    {},
    optional={
        "ids": st.lists(hex64, max_size=10),
        "authors": st.lists(hex64, max_size=10),
        "kinds": st.lists(st.integers(min_value=0, max_value=65535), max_size=10),
        "#e": st.lists(st.text(max_size=70), max_size=10),
        "#Z": st.lists(st.text(max_size=70), max_size=3),
        "since": st.integers(min_value=0, max_value=2**53 - 1),
        "until": st.integers(min_value=0, max_value=2**53 - 1),
        "limit": st.integers(min_value=0, max_value=10**6),
    },
)
filter_like = st.one_of(
    filter_shaped,
    st.tuples(filter_shaped, st.sampled_from(FILTER_KEYS), json_values).map(
        lambda p: {**p[0], p[1]: p[2]}
    ),
    json_values,
)
negentropy_hex = st.one_of(
    st.binary(max_size=64).map(bytes.hex), st.just("61"), st.text(max_size=20), json_values
)
sub_ids = st.one_of(st.text(min_size=1, max_size=64), st.text(max_size=70), json_values)
messages = st.one_of(
    st.tuples(st.just("EVENT"), event_like).map(list),
    st.tuples(st.just("AUTH"), event_like).map(list),
    st.tuples(st.sampled_from(["REQ", "COUNT"]), sub_ids, st.lists(filter_like, max_size=5)).map(
        lambda parts: [parts[0], parts[1], *parts[2]]
    ),
    st.tuples(st.just("CLOSE"), sub_ids).map(list),
    # NIP-77: a filter and a hex message (often not valid negentropy), or a message alone.
    st.tuples(st.just("NEG-OPEN"), sub_ids, filter_like, negentropy_hex).map(list),
    st.tuples(st.just("NEG-MSG"), sub_ids, negentropy_hex).map(list),
    st.tuples(st.just("NEG-CLOSE"), sub_ids).map(list),
    st.tuples(st.one_of(st.sampled_from(VERBS), st.text(max_size=20), json_values)).map(list),
    st.lists(json_values, max_size=5).flatmap(
        lambda rest: st.sampled_from(VERBS).map(lambda verb: [verb, *rest])
    ),
    json_values,
)


def to_wire(value: Any, ascii_only: bool, as_bytes: bool) -> bytes | str:
    text = json.dumps(value, ensure_ascii=ascii_only)
    return text.encode() if as_bytes else text


# ---- properties -----------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes(raw: bytes) -> None:
    check(raw)


@FUZZ
@given(st.text(max_size=4096))
def test_arbitrary_text(raw: str) -> None:
    check(raw)


@FUZZ
@given(messages, st.booleans(), st.booleans())
def test_json_shaped_messages(value: Any, ascii_only: bool, as_bytes: bool) -> None:
    check(to_wire(value, ascii_only, as_bytes))


@settings(max_examples=60, deadline=None, database=None)
@given(
    st.integers(min_value=1, max_value=200_000),
    st.sampled_from(["[", '{"a":', '["REQ","s",{"#e":[', '["EVENT",{"tags":[']),
    st.booleans(),
)
def test_deep_nesting(depth: int, opener: str, closed: bool) -> None:
    closer = {"[": "]", '{"a":': "}"}.get(opener, "]")
    raw = opener * depth + ("1" + closer * depth if closed else "")
    check(raw)
    check(raw.encode())


@settings(max_examples=100, deadline=None, database=None)
@given(
    st.sampled_from(
        [
            '["REQ","s",{"limit":%s}]',
            '["REQ","s",{"kinds":[%s]}]',
            '["REQ","s",{"since":%s,"until":%s}]',
            '["EVENT",{"id":"ab","created_at":%s}]',
            '["CLOSE",%s]',
            "[%s]",
        ]
    ),
    st.one_of(
        st.text(alphabet="0123456789", min_size=1, max_size=6000).map(
            lambda d: d.lstrip("0") or "0"
        ),
        st.text(alphabet="0123456789", min_size=1, max_size=400).map(lambda d: f"-{d}"),
        st.tuples(st.integers(0, 10**6), st.integers(-5000, 5000)).map(lambda p: f"{p[0]}e{p[1]}"),
        st.sampled_from(["1e400", "-1e400", "1.5", "-0", "0.0", "1E2", "NaN", "Infinity"]),
    ),
)
def test_huge_and_odd_numbers(template: str, number: str) -> None:
    check(template.replace("%s", number))


def signed_messages() -> list[bytes]:
    event = SIGNER.sign(1, "héllo \u2028 \x00", [["e", "ab" * 32], ["t", "x"]], created_at=7)
    return [
        b'["EVENT",' + msgspec.json.encode(event) + b"]",
        b'["REQ","sub",{"kinds":[1],"#e":["' + b"ab" * 32 + b'"],"limit":5},{"authors":[]}]',
        b'["AUTH",' + msgspec.json.encode(event) + b"]",
        b'["CLOSE","sub"]',
    ]


@FUZZ
@given(
    st.sampled_from(signed_messages()),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255), st.booleans()), max_size=8),
)
def test_mutated_valid_messages(raw: bytes, edits: list[tuple[int, int, bool]]) -> None:
    data = bytearray(raw)
    for position, value, insert in edits:
        index = position % (len(data) + 1)
        if insert or index == len(data):
            data.insert(index, value)
        else:
            data[index] = value
    check(bytes(data))
    check(bytes(data).decode("utf-8", "replace"))


@FUZZ
@given(st.integers(min_value=LIMITS.max_message_bytes - 8, max_value=LIMITS.max_message_bytes + 8))
def test_size_limit_is_in_utf8_bytes(size: int) -> None:
    body = '["CLOSE","' + "é" * size + '"]'
    result = decode_client_message(body, LIMITS)
    if len(body.encode()) > LIMITS.max_message_bytes:
        assert isinstance(result, NoticeRefusal) and "exceeds" in result.message
    check(body)


@settings(max_examples=20, deadline=None, database=None)
@given(st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=4))
def test_lone_surrogates(surrogates: str) -> None:
    check(f'["REQ","s{surrogates}",{{}}]')
