"""Malformed and hostile client input over a real WebSocket against the real relay.

Every bad message must get the NIP-01 answer the relay owes for it (cluster/nostr/messages.py):

* NOTICE `invalid: ...` when the message cannot be tied to an event or a subscription
  (not JSON, not an array, unknown verb, wrong arity, unreadable subscription id, ...);
* OK false `invalid: ...` for an EVENT whose id is readable but whose event is not acceptable;
* CLOSED `invalid: ...` for a REQ/COUNT whose subscription id is readable but whose filters are not.

Afterwards the same connection must still work (a fresh event is accepted and served back), and
nothing refused may have been stored.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec
import orjson
import pytest
from coincurve import PrivateKey

from cluster.nostr.signing import Signer
from tests.client import RelayClient, connect
from tests.services import RelayProcess

# The relay's limits, from relay_env in tests/conftest.py.
MAX_MESSAGE_BYTES = 65536
MAX_FILTERS = 4
MAX_LIMIT = 100

HEX64 = "0123456789abcdef" * 4

Payload = dict[str, Any]


def signed_payload(signer: Signer | None = None, content: str = "bad input") -> Payload:
    event = (signer or Signer()).sign(1, content, [["t", "bad-input"]], created_at=int(time.time()))
    payload: Payload = msgspec.to_builtins(event)
    return payload


def dumps(message: Any) -> str:
    return orjson.dumps(message).decode()


def _is_hex64(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in HEX64 for c in value)


async def still_works(client: RelayClient) -> None:
    """The connection still serves: a fresh event is accepted, then served back by id.

    Each answer must be the very next message, so a stray extra answer to the bad message fails too.
    """
    event = Signer().sign(1, "still here")
    await client.send(["EVENT", msgspec.to_builtins(event)])
    assert await client.receive() == ["OK", event.id, True, ""]
    await client.send(["REQ", "alive", {"ids": [event.id]}])
    stored = await client.receive()
    assert stored[:2] == ["EVENT", "alive"] and stored[2]["id"] == event.id
    assert await client.receive() == ["EOSE", "alive"]
    await client.send(["CLOSE", "alive"])


async def assert_not_stored(client: RelayClient, payload: Any) -> None:
    """Neither the event's id nor its author (a fresh key per test) finds anything stored."""
    assert isinstance(payload, dict)
    filters = [
        {field: [payload[key]]}
        for key, field in (("id", "ids"), ("pubkey", "authors"))
        if _is_hex64(payload.get(key))
    ]
    assert filters, "nothing to look the event up by"
    assert await client.query("stored", *filters) == []


def assert_notice(message: list[Any]) -> None:
    assert len(message) == 2 and message[0] == "NOTICE", message
    assert isinstance(message[1], str) and message[1].startswith("invalid:"), message


def assert_closed(message: list[Any], sub_id: str, prefix: str = "invalid:") -> None:
    assert len(message) == 3 and message[:2] == ["CLOSED", sub_id], message
    assert message[2].startswith(prefix), message


def assert_ok_invalid(message: list[Any], event_id: Any) -> None:
    assert len(message) == 4 and message[:3] == ["OK", event_id, False], message
    assert message[3].startswith("invalid:"), message


# ---- messages that cannot be tied to an event or a subscription: NOTICE ------------------------

NOTICE_MESSAGES = {
    # not JSON
    "plain text": "hello relay",
    "empty text": "",
    "whitespace": "   \n",
    "truncated": '["REQ","sub",{"kinds":[1]',
    "trailing garbage": '["REQ","sub",{}] ["CLOSE","sub"]',
    "single quotes": "['REQ','sub',{}]",
    "NaN": '["REQ","sub",{"limit":NaN}]',
    "lone surrogate": '["REQ","sub",{"#t":["\\ud800"]}]',
    # JSON, but not an array
    "object": '{"verb":"REQ","sub":"x"}',
    "number": "42",
    "string": '"REQ"',
    "null": "null",
    "boolean": "true",
    # empty array, or no verb string first
    "empty array": "[]",
    "number verb": '[1,"sub",{}]',
    "null verb": "[null]",
    "array verb": '[["REQ"],"sub",{}]',
    # unknown verbs (case matters, relay-to-client verbs are not commands)
    "unknown verb": '["PUBLISH",{}]',
    "lowercase verb": '["req","sub",{}]',
    "relay verb NOTICE": '["NOTICE","hello"]',
    "relay verb EOSE": '["EOSE","sub"]',
    "empty verb": '["","sub"]',
    # wrong arity
    "EVENT without event": '["EVENT"]',
    "CLOSE without id": '["CLOSE"]',
    "CLOSE with two ids": '["CLOSE","a","b"]',
    "REQ without id": '["REQ"]',
    "COUNT without id": '["COUNT"]',
    # wrong types where no event id / subscription id can be read
    "EVENT with number": '["EVENT",1]',
    "EVENT with null": '["EVENT",null]',
    "EVENT with list": '["EVENT",["id","pubkey"]]',
    "REQ with number sub id": '["REQ",1,{}]',
    "REQ with null sub id": '["REQ",null,{}]',
    "REQ with object sub id": '["REQ",{"id":"x"},{}]',
    "COUNT with number sub id": '["COUNT",7,{}]',
    "CLOSE with number sub id": '["CLOSE",1]',
    # empty subscription id
    "REQ with empty sub id": '["REQ","",{}]',
    "COUNT with empty sub id": '["COUNT","",{}]',
    "CLOSE with empty sub id": '["CLOSE",""]',
}


@pytest.mark.parametrize("raw", NOTICE_MESSAGES.values(), ids=NOTICE_MESSAGES.keys())
async def test_unusable_message_gets_notice(relay: RelayProcess, raw: str) -> None:
    async with connect(relay.url) as client:
        await client.send(raw)
        assert_notice(await client.receive())
        await still_works(client)


# ---- EVENT messages whose event cannot be read at all: NOTICE, nothing stored ------------------


def _event_as_string(payload: Payload) -> list[Any]:
    return ["EVENT", dumps(payload)]


def _two_events(payload: Payload) -> list[Any]:
    return ["EVENT", payload, payload]


def _field(key: str, value: Any) -> Callable[[Payload], list[Any]]:
    def build(payload: Payload) -> list[Any]:
        return ["EVENT", {**payload, key: value}]

    return build


def _without(key: str) -> Callable[[Payload], list[Any]]:
    def build(payload: Payload) -> list[Any]:
        return ["EVENT", {k: v for k, v in payload.items() if k != key}]

    return build


UNREADABLE_EVENTS: dict[str, Callable[[Payload], list[Any]]] = {
    "EVENT with a JSON string instead of an object": _event_as_string,
    "EVENT with two events": _two_events,
    "id is a number": _field("id", 12345),
    "id is null": _field("id", None),
    "id is missing": _without("id"),
}


@pytest.mark.parametrize("build", UNREADABLE_EVENTS.values(), ids=UNREADABLE_EVENTS.keys())
async def test_unreadable_event_gets_notice_and_is_not_stored(
    relay: RelayProcess, build: Callable[[Payload], list[Any]]
) -> None:
    payload = signed_payload()
    async with connect(relay.url) as client:
        await client.send(build(payload))
        assert_notice(await client.receive())
        await still_works(client)
        await assert_not_stored(client, payload)


# ---- EVENT messages with a readable id: OK false `invalid:`, nothing stored --------------------


def _tamper_content(payload: Payload) -> Payload:
    return {**payload, "content": payload["content"] + " (edited)"}


def _tamper_created_at(payload: Payload) -> Payload:
    return {**payload, "created_at": payload["created_at"] - 1}


def _flip_sig(payload: Payload) -> Payload:
    sig = payload["sig"]
    return {**payload, "sig": sig[:10] + ("0" if sig[10] != "0" else "1") + sig[11:]}


def _sig_of_another_key(payload: Payload) -> Payload:
    # A well-formed BIP-340 signature over the right id, made with somebody else's key.
    sig = PrivateKey().sign_schnorr(bytes.fromhex(payload["id"]), os.urandom(32)).hex()
    return {**payload, "sig": sig}


def _zero_sig(payload: Payload) -> Payload:
    return {**payload, "sig": "0" * 128}


def _set(key: str, value: Any) -> Callable[[Payload], Payload]:
    def build(payload: Payload) -> Payload:
        return {**payload, key: value}

    return build


def _remove(key: str) -> Callable[[Payload], Payload]:
    def build(payload: Payload) -> Payload:
        return {k: v for k, v in payload.items() if k != key}

    return build


def _upper(key: str) -> Callable[[Payload], Payload]:
    def build(payload: Payload) -> Payload:
        return {**payload, key: payload[key].upper()}

    return build


def _cut(key: str) -> Callable[[Payload], Payload]:
    def build(payload: Payload) -> Payload:
        return {**payload, key: payload[key][:-1]}

    return build


def _extend(key: str) -> Callable[[Payload], Payload]:
    def build(payload: Payload) -> Payload:
        return {**payload, key: payload[key] + "00"}

    return build


def _non_hex(key: str) -> Callable[[Payload], Payload]:
    def build(payload: Payload) -> Payload:
        return {**payload, key: "z" + payload[key][1:]}

    return build


INVALID_EVENTS: dict[str, Callable[[Payload], Payload]] = {
    # wrong JSON types
    "kind is a string": _set("kind", "1"),
    "kind is a float": _set("kind", 1.5),
    "kind is a boolean": _set("kind", True),
    "kind is null": _set("kind", None),
    "created_at is a string": _set("created_at", "1700000000"),
    "created_at is a float": _set("created_at", 1700000000.5),
    "content is a number": _set("content", 42),
    "content is null": _set("content", None),
    "content is an object": _set("content", {"text": "hi"}),
    "pubkey is a number": _set("pubkey", 1),
    "sig is a list": _set("sig", ["ab"]),
    "pubkey is missing": _remove("pubkey"),
    "sig is missing": _remove("sig"),
    "kind is missing": _remove("kind"),
    # tags that are not lists of strings
    "tags contain a number": _set("tags", [["t", 1]]),
    "tag is a number": _set("tags", [1]),
    "tag is a string": _set("tags", ["t"]),
    "tag is an object": _set("tags", [{"t": "x"}]),
    "tag holds a null": _set("tags", [["t", None]]),
    "tag holds a list": _set("tags", [["t", ["nested"]]]),
    "tags is a string": _set("tags", "t"),
    "tags is an object": _set("tags", {"t": ["x"]}),
    "tags is null": _set("tags", None),
    # non-hex or wrong-length id, pubkey, sig
    "id not hex": _non_hex("id"),
    "id uppercase": _upper("id"),
    "id too short": _cut("id"),
    "id too long": _extend("id"),
    "pubkey not hex": _non_hex("pubkey"),
    "pubkey uppercase": _upper("pubkey"),
    "pubkey too short": _cut("pubkey"),
    "pubkey too long": _extend("pubkey"),
    "sig not hex": _non_hex("sig"),
    "sig uppercase": _upper("sig"),
    "sig too short": _cut("sig"),
    "sig too long": _extend("sig"),
    # out-of-range numbers
    "kind above 65535": _set("kind", 65536),
    "kind negative": _set("kind", -1),
    "created_at negative": _set("created_at", -5),
    # authentic-looking but false
    "id does not match content": _tamper_content,
    "id does not match created_at": _tamper_created_at,
    "signature altered": _flip_sig,
    "signature all zeroes": _zero_sig,
    "signature by another key": _sig_of_another_key,
}


@pytest.mark.parametrize("tamper", INVALID_EVENTS.values(), ids=INVALID_EVENTS.keys())
async def test_invalid_event_gets_ok_false_and_is_not_stored(
    relay: RelayProcess, tamper: Callable[[Payload], Payload]
) -> None:
    payload = tamper(signed_payload())
    async with connect(relay.url) as client:
        await client.send(["EVENT", payload])
        assert_ok_invalid(await client.receive(), payload["id"])
        await still_works(client)
        await assert_not_stored(client, payload)


# ---- REQ / COUNT with a readable subscription id but unusable filters: CLOSED `invalid:` -------

BAD_FILTERS: dict[str, list[Any]] = {
    "1000 filters": [{"kinds": [1]}] * 1000,
    f"{MAX_FILTERS + 1} filters": [{"kinds": [1]}] * (MAX_FILTERS + 1),
    "no filter": [],
    "filter is a number": [1],
    "filter is a list": [["kinds", 1]],
    "filter is a string": ["{}"],
    "filter is null": [None],
    "negative limit": [{"limit": -1}],
    "limit is a string": [{"limit": "10"}],
    "limit is a float": [{"limit": 10.5}],
    "limit is a boolean": [{"limit": True}],
    "multi-letter tag": [{"#tt": ["x"]}],
    "tag name is a digit": [{"#1": ["x"]}],
    "bare #": [{"#": ["x"]}],
    "non-ASCII tag letter": [{"#é": ["x"]}],
    "tag values are numbers": [{"#t": [1, 2]}],
    "tag values not a list": [{"#t": "x"}],
    "ids not hex": [{"ids": ["not-hex"]}],
    "ids 64 non-hex chars": [{"ids": ["z" * 64]}],
    "ids uppercase": [{"ids": [HEX64.upper()]}],
    "ids prefix": [{"ids": [HEX64[:16]]}],
    "ids too long": [{"ids": [HEX64 + "00"]}],
    "ids a string": [{"ids": HEX64}],
    "ids a number": [{"ids": [1]}],
    "authors not hex": [{"authors": ["npub1xyz"]}],
    "kinds as strings": [{"kinds": ["1"]}],
    "kinds negative": [{"kinds": [-1]}],
    "kinds above 65535": [{"kinds": [65536]}],
    "since negative": [{"since": -1}],
    "until a string": [{"until": "now"}],
    "second filter bad": [{"kinds": [1]}, {"ids": ["x"]}],
}

# Fields NIP-01 does not define: NIP-01's own example answers `unsupported:`.
UNSUPPORTED_FILTERS: dict[str, list[Any]] = {
    "sort (not a NIP-01 field)": [{"sort": "top"}],
    "unknown field": [{"kinds": [1], "foo": 1}],
    "second filter unsupported": [{"kinds": [1]}, {"sort": "x"}],
}


@pytest.mark.parametrize("verb", ["REQ", "COUNT"])
@pytest.mark.parametrize("filters", BAD_FILTERS.values(), ids=BAD_FILTERS.keys())
async def test_unusable_filters_get_closed_invalid(
    relay: RelayProcess, verb: str, filters: list[Any]
) -> None:
    async with connect(relay.url) as client:
        await client.send([verb, "bad-filter", *filters])
        assert_closed(await client.receive(), "bad-filter")
        await still_works(client)


@pytest.mark.parametrize("verb", ["REQ", "COUNT"])
@pytest.mark.parametrize("filters", UNSUPPORTED_FILTERS.values(), ids=UNSUPPORTED_FILTERS.keys())
async def test_unknown_filter_fields_get_closed_unsupported(
    relay: RelayProcess, verb: str, filters: list[Any]
) -> None:
    async with connect(relay.url) as client:
        await client.send([verb, "odd-filter", *filters])
        assert_closed(await client.receive(), "odd-filter", prefix="unsupported:")
        await still_works(client)


@pytest.mark.parametrize("limit", [10**12, 2**63, 10**30])
async def test_absurd_limit_is_capped_not_refused(relay: RelayProcess, limit: int) -> None:
    signer = Signer()
    now = int(time.time())
    events = [signer.sign(1, f"absurd {i}", created_at=now - 10 + i) for i in range(3)]
    async with connect(relay.url) as client:
        for event in events:
            assert await client.publish(event) == ["OK", event.id, True, ""]
        # Written by hand: orjson refuses integers beyond 64 bits, JSON does not.
        await client.send(f'["REQ","absurd",{{"authors":["{signer.pubkey}"],"limit":{limit}}}]')
        received = [await client.receive() for _ in range(4)]
        assert received[-1] == ["EOSE", "absurd"]
        assert [m[:2] for m in received[:3]] == [["EVENT", "absurd"]] * 3
        assert [m[2]["id"] for m in received[:3]] == [e.id for e in reversed(events)]
        await client.send(["CLOSE", "absurd"])
        await still_works(client)


async def test_close_of_unknown_subscription_gets_notice(relay: RelayProcess) -> None:
    async with connect(relay.url) as client:
        await client.send(["CLOSE", "never-opened"])
        assert_notice(await client.receive())
        # Closing twice: the second CLOSE names a subscription that is no longer open.
        await client.send(["REQ", "once", {"ids": [HEX64]}])
        assert await client.receive() == ["EOSE", "once"]
        await client.send(["CLOSE", "once"])
        await client.send(["CLOSE", "once"])
        assert_notice(await client.receive())
        await still_works(client)


async def test_closed_subscription_id_is_really_closed(relay: RelayProcess) -> None:
    """A REQ refused with CLOSED ends whatever subscription had that id.

    NIP-01: CLOSED "indicates that a subscription was ended on the server side", and a REQ with
    an id in use "MUST overwrite the previous subscription". After ["CLOSED", "s", ...] the client
    considers "s" gone, so the relay must not keep delivering EVENTs for "s".
    """
    signer = Signer()
    async with connect(relay.url) as client:
        await client.send(["REQ", "s", {"authors": [signer.pubkey]}])
        assert await client.receive() == ["EOSE", "s"]
        await client.send(["REQ", "s", {"authors": [signer.pubkey], "sort": "x"}])
        assert_closed(await client.receive(), "s", prefix="unsupported:")
        event = signer.sign(1, "after CLOSED")
        await client.send(["EVENT", msgspec.to_builtins(event)])
        assert await client.receive() == ["OK", event.id, True, ""]
        await client.expect_silence(0.5)


# ---- oversized and deeply nested messages: NOTICE `invalid:`, connection kept -----------------


def _req_of_size(size: int, char: str = "a") -> str:
    """A valid REQ whose UTF-8 encoding is exactly `size` bytes."""
    head, tail = '["REQ","big",{"#t":["', '"]}]'
    width = len(char.encode())
    count, rest = divmod(size - len(head) - len(tail), width)
    return head + char * count + "a" * rest + tail


async def test_message_at_the_size_limit_is_accepted(relay: RelayProcess) -> None:
    raw = _req_of_size(MAX_MESSAGE_BYTES)
    assert len(raw.encode()) == MAX_MESSAGE_BYTES
    async with connect(relay.url) as client:
        await client.send(raw)
        assert await client.receive() == ["EOSE", "big"]


OVERSIZED = {
    "one byte over": _req_of_size(MAX_MESSAGE_BYTES + 1),
    "twice the limit": _req_of_size(2 * MAX_MESSAGE_BYTES),
    "500 kB": _req_of_size(500_000),
    # NIP-11 max_message_length and the setting's name are in bytes: 3-byte characters make
    # the message ~1.15x the limit in bytes while it has fewer characters than the limit.
    "multi-byte characters": _req_of_size(MAX_MESSAGE_BYTES + 10_000, "€"),
}


@pytest.mark.parametrize("raw", OVERSIZED.values(), ids=OVERSIZED.keys())
async def test_oversized_message_gets_notice(relay: RelayProcess, raw: str) -> None:
    assert len(raw.encode()) > MAX_MESSAGE_BYTES
    async with connect(relay.url) as client:
        await client.send(raw)
        assert_notice(await client.receive())
        await still_works(client)


async def test_oversized_event_gets_notice_and_is_not_stored(relay: RelayProcess) -> None:
    payload = signed_payload(content="x" * (MAX_MESSAGE_BYTES + 1))
    async with connect(relay.url) as client:
        await client.send(["EVENT", payload])
        assert_notice(await client.receive())
        await still_works(client)
        await assert_not_stored(client, payload)


DEEP = {
    "100000 open brackets": "[" * 100_000,  # also over the size limit
    "60000 open brackets": "[" * 60_000,
    "30000 balanced brackets": "[" * 30_000 + "]" * 30_000,
    "nested objects in a filter": '["REQ","deep",' + '{"a":' * 10_000 + "1" + "}" * 10_000 + "]",
    "nested arrays in an event": '["EVENT",{"tags":' + "[" * 20_000 + "]" * 20_000 + "}]",
}


@pytest.mark.parametrize("raw", DEEP.values(), ids=DEEP.keys())
async def test_deeply_nested_json_gets_notice(relay: RelayProcess, raw: str) -> None:
    async with connect(relay.url) as client:
        await client.send(raw)
        assert_notice(await client.receive())
        await still_works(client)


# ---- binary frames and invalid UTF-8 ---------------------------------------------------------


async def test_binary_frame_with_json_is_decoded(relay: RelayProcess) -> None:
    async with connect(relay.url) as client:
        await client.ws.send_bytes(b'["REQ","bin",{"ids":["' + HEX64.encode() + b'"]}]')
        assert await client.receive() == ["EOSE", "bin"]
        await still_works(client)


INVALID_UTF8 = {
    "junk bytes": b"\xff\xfe",
    "in a subscription id": b'["REQ","\xff",{}]',
    "in a tag value": b'["REQ","sub",{"#t":["\xc3\x28"]}]',
    "truncated sequence": b'["REQ","sub\xe2\x82",{}]',
    "overlong encoding": b'["REQ","\xc0\xaf",{}]',
    "encoded surrogate": b'["REQ","\xed\xa0\x80",{}]',
}


@pytest.mark.parametrize("raw", INVALID_UTF8.values(), ids=INVALID_UTF8.keys())
async def test_invalid_utf8_in_binary_frame_gets_notice(relay: RelayProcess, raw: bytes) -> None:
    # The relay accepts binary frames and decodes their bytes as JSON text; bytes that are not
    # UTF-8 are not JSON, so the answer is the same NOTICE as for any undecodable message.
    async with connect(relay.url) as client:
        await client.ws.send_bytes(raw)
        assert_notice(await client.receive())
        await still_works(client)


async def test_invalid_utf8_in_event_binary_frame_gets_notice(relay: RelayProcess) -> None:
    payload = signed_payload()
    raw = orjson.dumps(["EVENT", payload]).replace(b"bad input", b"bad \xff input")
    async with connect(relay.url) as client:
        await client.ws.send_bytes(raw)
        assert_notice(await client.receive())
        await still_works(client)
        await assert_not_stored(client, payload)


async def test_invalid_utf8_in_text_frame_closes_with_1007(relay: RelayProcess) -> None:
    # Invalid UTF-8 inside a TEXT frame is not a Nostr error but a WebSocket protocol violation:
    # RFC 6455 section 8.1 says an endpoint receiving such a text frame MUST _Fail the WebSocket
    # Connection_, and section 7.4.1 assigns close code 1007 (invalid frame payload data) to it.
    # So there is no NOTICE here: the relay closes with 1007, and only this connection.
    async with connect(relay.url) as client:
        await client.ws.send_frame(b'["REQ","sub",{"#t":["\xff\xfe"]}]', aiohttp.WSMsgType.TEXT)
        message = await client.ws.receive(timeout=10)
        assert message.type == aiohttp.WSMsgType.CLOSE, (message.type, message.data)
        assert message.data == aiohttp.WSCloseCode.INVALID_TEXT == 1007
        assert client.ws.close_code == 1007
    async with connect(relay.url) as client:
        await still_works(client)
