"""superjson decoding against real library output (fixtures), and encoding back to the same."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cluster.payments.superjson import (
    BigInt,
    SuperjsonError,
    decode_superjson,
    dumps,
    encode_superjson,
    loads,
    parse_path,
)

FIXTURES = json.loads((Path(__file__).parent / "superjson_fixtures.json").read_text())
CASES = {case["name"]: case for case in FIXTURES["cases"]}
# Decoding loses what Python cannot tell apart (undefined vs null, map vs object, set vs array,
# shared references); these cases are checked one way only.
ONE_WAY = {
    "undefined_field",
    "root_array",
    "set_and_map",
    "map_with_bigint_keys",
    "referential_equality",
    "referential_equality_dedupe",
}


def untag(value: Any, bigint: type[int] = int) -> Any:
    """The fixture's tagged JavaScript value as the Python value the decoder must return.

    With bigint=BigInt, JavaScript bigints become the marker type the encoder needs to send a
    small integer as a bigint.
    """
    if isinstance(value, list):
        return [untag(item, bigint) for item in value]
    if not isinstance(value, dict):
        return value
    if "$bigint" in value:
        return bigint(value["$bigint"])
    if "$date" in value:
        return datetime.fromisoformat(value["$date"].replace("Z", "+00:00"))
    if "$undefined" in value:
        return None
    if "$set" in value:
        return [untag(item) for item in value["$set"]]
    if "$map" in value:
        return {untag(key): untag(item) for key, item in value["$map"]}
    if "$number" in value:
        return float(value["$number"].replace("Infinity", "inf"))
    return {key: untag(item, bigint) for key, item in value.items()}


def same(left: Any, right: Any) -> bool:
    """Equality that also tells NaN == NaN and -0.0 from 0.0 apart, and int from float."""
    if isinstance(left, float) and isinstance(right, float):
        if math.isnan(left) or math.isnan(right):
            return math.isnan(left) and math.isnan(right)
        return left == right and math.copysign(1, left) == math.copysign(1, right)
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(same(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(map(same, left, right))
    return bool(left == right)


def test_fixtures_come_from_the_real_library() -> None:
    assert FIXTURES["superjson_version"] == "2.2.6"
    assert any("superjson.serialize" in line for line in FIXTURES["generator"])
    assert len(CASES) >= 15


@pytest.mark.parametrize("name", sorted(CASES))
def test_decode_matches_superjson(name: str) -> None:
    case = CASES[name]
    assert same(decode_superjson(case["superjson"]), untag(case["expected"]))


@pytest.mark.parametrize("name", sorted(set(CASES) - ONE_WAY))
def test_encode_reproduces_superjson(name: str) -> None:
    case = CASES[name]
    encoded = encode_superjson(untag(case["expected"], BigInt))
    # Byte-identical, key order included, to what the library wrote, except that superjson also
    # lists equal bigints as "referentialEqualities" (it treats bigints as objects); that is
    # optional for a reader, and our encoder leaves it out.
    expected = json.loads(json.dumps(case["superjson"]))
    expected.get("meta", {}).pop("referentialEqualities", None)
    assert json.dumps(encoded) == json.dumps(expected)


def test_channel_state_bigints_become_ints() -> None:
    message = decode_superjson(CASES["huge_capacity"]["superjson"])
    data = message["result"]["data"]
    assert data["capacity"] == 2**64 + 1
    assert data["balance"] == 2**64 - 5
    assert data["highestNonce"] == 2**53 - 1 and isinstance(data["highestNonce"], int)


def test_dates_are_aware_utc_datetimes() -> None:
    data = decode_superjson(CASES["date_field"]["superjson"])["result"]["data"]
    assert data["recordedAt"] == datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert data["recordedAt"].tzinfo is UTC


def test_decode_does_not_modify_the_payload_unless_asked() -> None:
    payload = json.loads(json.dumps(CASES["channel_state_response"]["superjson"]))
    before = json.dumps(payload)
    decode_superjson(payload)
    assert json.dumps(payload) == before
    decoded = decode_superjson(payload, in_place=True)
    assert decoded["result"]["data"]["capacity"] == 100000
    assert payload["json"]["result"]["data"]["capacity"] == 100000


def test_paths_escape_dots_and_backslashes() -> None:
    assert parse_path(r"a\.b.c") == ["a.b", "c"]
    assert parse_path(r"e\\\.f.g\.h") == ["e\\.f", "g.h"]
    assert parse_path("0.1.deep") == ["0", "1", "deep"]
    assert parse_path(r"a\\b", legacy=True) == ["a\\\\b"]
    with pytest.raises(SuperjsonError):
        parse_path(r"a\b")


def test_legacy_payload_without_version() -> None:
    # superjson < 1.12 wrote no "v" and did not escape backslashes.
    payload = {"json": {"a.b": "5", "c\\d": "6"}, "meta": {"values": {"a\\.b": ["bigint"]}}}
    assert decode_superjson(payload) == {"a.b": 5, "c\\d": "6"}


def test_bare_string_annotations_are_accepted() -> None:
    # The README still shows `{"date": "Date"}`; v2 writes `["Date"]`.
    payload = {"json": {"date": "1970-01-01T00:00:00.000Z"}, "meta": {"values": {"date": "Date"}}}
    assert decode_superjson(payload) == {"date": datetime(1970, 1, 1, tzinfo=UTC)}


@pytest.mark.parametrize(
    "payload",
    [
        {"meta": {}},
        [1, 2],
        {"json": {"a": "1"}, "meta": {"values": {"b": ["bigint"]}}},
        {"json": {"a": "x"}, "meta": {"values": {"a": ["bigint"]}, "v": 1}},
        {"json": {"a": "1"}, "meta": {"values": {"a": ["float128"]}, "v": 1}},
        {"json": {"a": "not a date"}, "meta": {"values": {"a": ["Date"]}, "v": 1}},
        {"json": {"a": [1]}, "meta": {"values": {"a.3": ["bigint"]}, "v": 1}},
        {"json": {"a": 1}, "meta": "nope"},
    ],
)
def test_invalid_payloads_raise(payload: Any) -> None:
    with pytest.raises(SuperjsonError):
        decode_superjson(payload)


def test_composite_annotations_keep_the_json_value() -> None:
    payload = {
        "json": {"k": {"x": 1}, "t": [1, 2]},
        "meta": {"values": {"k": [["class", "Thing"]], "t": [["typed-array", "Uint8Array"]]}},
    }
    assert decode_superjson(payload) == {"k": {"x": 1}, "t": [1, 2]}


def test_encode_plain_values_need_no_meta() -> None:
    value = {"channelId": "btc:abc", "amountSats": 2**53 - 1, "ok": True, "none": None}
    assert encode_superjson(value) == {"json": value}


def test_encode_marks_big_and_forced_bigints() -> None:
    payload = encode_superjson({"capacity": BigInt(5), "big": -(2**53), "small": 2**53 - 1})
    assert payload == {
        "json": {"capacity": "5", "big": str(-(2**53)), "small": 2**53 - 1},
        "meta": {"values": {"capacity": ["bigint"], "big": ["bigint"]}, "v": 1},
    }


def test_encode_datetime_as_js_iso_string() -> None:
    when = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert encode_superjson(when) == {
        "json": "2025-01-02T03:04:05.678Z",
        "meta": {"values": ["Date"], "v": 1},
    }
    with pytest.raises(TypeError):
        encode_superjson(datetime(2025, 1, 1))


def test_encode_rejects_what_json_cannot_hold() -> None:
    with pytest.raises(TypeError):
        encode_superjson({1: "int key"})
    with pytest.raises(TypeError):
        encode_superjson(object())


def test_bool_is_not_a_bigint() -> None:
    assert encode_superjson([True, False]) == {"json": [True, False]}


def test_bytes_round_trip_keeps_big_integers_exact() -> None:
    value = {"a": 2**80, "b": [BigInt(1), 2], "c": datetime(2020, 2, 2, tzinfo=UTC)}
    assert loads(dumps(value)) == {"a": 2**80, "b": [1, 2], "c": value["c"]}
