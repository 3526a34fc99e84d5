"""NEG-OPEN / NEG-MSG / NEG-CLOSE decoding, NEG-MSG / NEG-ERR encoding, and the item-list SQL."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from cluster.nostr.filters import Filter
from cluster.nostr.messages import (
    MessageLimits,
    NegCloseCommand,
    NegInvalidCommand,
    NegMsgCommand,
    NegOpenCommand,
    NoticeRefusal,
    decode_client_message,
    neg_err_message,
    neg_msg_message,
)
from cluster.nostr.rejection import Prefix
from cluster.store.items import build_items

LIMITS = MessageLimits()


def decode(message: Any) -> Any:
    return decode_client_message(orjson.dumps(message), LIMITS)


def test_neg_open_decodes_filter_and_message() -> None:
    command = decode(["NEG-OPEN", "s", {"kinds": [1], "since": 5}, "61AB"])
    assert command == NegOpenCommand(
        "s", Filter(kinds=frozenset({1}), since=5, limit=LIMITS.filters.default_limit), b"\x61\xab"
    )


def test_neg_msg_and_close_decode() -> None:
    assert decode(["NEG-MSG", "s", "6100"]) == NegMsgCommand("s", b"\x61\x00")
    assert decode(["NEG-CLOSE", "s"]) == NegCloseCommand("s")


@pytest.mark.parametrize(
    ("message", "text"),
    [
        (["NEG-OPEN", "s", {}, "6"], "not valid hex"),
        (["NEG-OPEN", "s", {}, "61 00"], "not valid hex"),
        (["NEG-OPEN", "s", {}, ""], "must be a hex string"),
        (["NEG-OPEN", "s", {}, None], "must be a hex string"),
        (["NEG-OPEN", "s", {}, "61", "extra"], "NEG-OPEN takes"),
        (["NEG-OPEN", "s", {"authors": ["x"]}, "61"], "authors"),
        (["NEG-OPEN", "s", {"nope": 1}, "61"], "nope"),
        (["NEG-MSG", "s", "g0"], "not valid hex"),
        (["NEG-MSG", "s"], "NEG-MSG takes"),
        (["NEG-CLOSE", "s", 1], "NEG-CLOSE takes"),
        (["NEG-MSG", "x" * 65, "61"], "longer than 64"),
    ],
)
def test_bad_neg_messages_become_neg_err_for_their_id(message: Any, text: str) -> None:
    command = decode(message)
    assert isinstance(command, NegInvalidCommand), command
    assert command.sub_id == message[1]
    assert text in command.rejection.text
    assert command.rejection.prefix in (Prefix.INVALID, Prefix.UNSUPPORTED)


@pytest.mark.parametrize("message", [["NEG-OPEN"], ["NEG-MSG", 5, "61"], ["NEG-CLOSE", ""]])
def test_neg_messages_without_a_usable_id_get_a_notice(message: Any) -> None:
    assert isinstance(decode(message), NoticeRefusal)


def test_encoders() -> None:
    assert orjson.loads(neg_msg_message("s", b"\x61\x00")) == ["NEG-MSG", "s", "6100"]
    assert orjson.loads(neg_err_message("s", "closed: bye")) == ["NEG-ERR", "s", "closed: bye"]
    assert orjson.loads(neg_err_message("s", "blocked: big", 20)) == [
        "NEG-ERR",
        "s",
        "blocked: big",
        20,
    ]


@pytest.mark.parametrize(
    ("flt", "hidden", "fragments"),
    [
        (Filter(), frozenset(), ["FROM events WHERE (expires_at IS NULL OR expires_at > %s)"]),
        (Filter(kinds=frozenset({1})), frozenset(), ["kind = %s"]),
        (Filter(), frozenset({4, 1059}), ["kind <> ALL(%s::integer[])"]),
        (Filter(tags=(("t", frozenset({"x"})),)), frozenset(), ["FROM event_tags"]),
    ],
)
def test_item_list_sql(flt: Filter, hidden: frozenset[int], fragments: list[str]) -> None:
    sql, params = build_items(flt, 100, hidden, 50)
    assert sql.startswith("SELECT count(*), coalesce(string_agg(int8send(created_at)")
    assert "ORDER BY created_at, id" in sql and sql.endswith("LIMIT %s) AS items")
    for fragment in fragments:
        assert fragment in sql
    assert params[0] == 100 or params[0] == ["t:x"]  # now (expiry), or the tag lookup first
    assert params[-1] == 51  # one more than max_items: enough to tell "too many"
    assert sql.count("%s") == len(params)
    if hidden:
        assert params[-2] == [4, 1059]
