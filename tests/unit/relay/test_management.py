"""NIP-86 JSON-RPC dispatch over an in-memory store, the moderation checks, and request URLs."""

from __future__ import annotations

from typing import Any
from unittest import mock

import msgspec
import orjson
import psycopg
import pytest
from aiohttp.test_utils import make_mocked_request

from cluster.config import Settings
from cluster.nostr.rejection import Prefix
from cluster.nostr.signing import Signer
from cluster.relay.management.http import request_urls
from cluster.relay.management.rpc import METHODS, Management
from cluster.relay.moderation import Moderation
from cluster.store.moderation import ModerationState

KEY = "ab" * 32
OTHER = "cd" * 32


class MemoryDecisions:
    """DecisionStore in memory: what PostgresDecisions does, without the database."""

    def __init__(self) -> None:
        self.lists: dict[str, dict[str, str]] = {"banned": {}, "allowed": {}}
        self.events: dict[str, str] = {}
        self.kinds: set[int] = set()
        self.ips: dict[str, str] = {}
        self.info: dict[str, str] = {}
        self.deleted: list[str] = []
        self.fail_with: Exception | None = None

    async def load(self) -> ModerationState:
        if self.fail_with is not None:
            raise self.fail_with
        return ModerationState(
            banned_pubkeys=dict(self.lists["banned"]),
            allowed_pubkeys=dict(self.lists["allowed"]),
            banned_events=dict(self.events),
            allowed_kinds=frozenset(self.kinds),
            blocked_ips=dict(self.ips),
            info=dict(self.info),
        )

    async def set_pubkey(self, listing: str, pubkey: str, reason: str, present: bool) -> None:
        if present:
            self.lists[listing][pubkey] = reason
        else:
            self.lists[listing].pop(pubkey, None)

    async def ban_event(self, event_id: str, reason: str) -> int:
        self.events[event_id] = reason
        self.deleted.append(event_id)
        return 1

    async def allow_event(self, event_id: str) -> None:
        self.events.pop(event_id, None)

    async def set_allowed_kind(self, kind: int, present: bool) -> None:
        (self.kinds.add if present else self.kinds.discard)(kind)

    async def set_blocked_ip(self, ip: str, reason: str, present: bool) -> None:
        if present:
            self.ips[ip] = reason
        else:
            self.ips.pop(ip, None)

    async def set_relay_info(self, field: str, value: str) -> None:
        self.info[field] = value


class Harness:
    def __init__(self) -> None:
        self.store = MemoryDecisions()
        self.moderation = Moderation()
        self.announced = 0
        self.api = Management(self.store, self.moderation, self._announce)

    async def _announce(self) -> bool:
        self.announced += 1
        return True

    async def call(self, method: str, *params: Any) -> tuple[int, dict[str, Any]]:
        status, body = await self.api.call(orjson.dumps({"method": method, "params": params}))
        answer: dict[str, Any] = orjson.loads(body)
        return status, answer


@pytest.fixture
def harness() -> Harness:
    return Harness()


async def test_supported_methods_lists_every_other_method(harness: Harness) -> None:
    status, answer = await harness.call("supportedmethods")
    assert status == 200
    assert set(answer["result"]) == set(METHODS) - {"supportedmethods"}
    assert "error" not in answer


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'{"params": []}', b'{"method": 5}', b'{"method": "x", "params": 1}'],
)
async def test_malformed_requests_get_an_error_body(harness: Harness, body: bytes) -> None:
    status, answer = await harness.api.call(body)
    assert status == 400
    decoded = orjson.loads(answer)
    assert decoded["result"] is None and decoded["error"].startswith("invalid request")


async def test_unknown_method(harness: Harness) -> None:
    status, answer = await harness.call("createrole", "x")
    assert status == 400 and "unsupported method" in answer["error"]


async def test_ban_and_unban_pubkey(harness: Harness) -> None:
    assert await harness.call("banpubkey", KEY.upper(), "spam") == (200, {"result": True})
    assert KEY in harness.moderation.state.banned_pubkeys  # this worker, before the answer
    assert harness.announced == 1  # and every other worker
    assert await harness.call("listbannedpubkeys") == (
        200,
        {"result": [{"pubkey": KEY, "reason": "spam"}]},
    )
    assert (await harness.call("unbanpubkey", KEY))[0] == 200
    assert (await harness.call("listbannedpubkeys"))[1] == {"result": []}


async def test_allow_list(harness: Harness) -> None:
    await harness.call("allowpubkey", KEY)
    await harness.call("allowpubkey", OTHER, "friend")
    _, answer = await harness.call("listallowedpubkeys")
    assert answer["result"] == [
        {"pubkey": KEY, "reason": ""},
        {"pubkey": OTHER, "reason": "friend"},
    ]
    await harness.call("unallowpubkey", KEY)
    assert set(harness.moderation.state.allowed_pubkeys) == {OTHER}


@pytest.mark.parametrize(
    ("method", "params", "fragment"),
    [
        ("banpubkey", [], "missing parameter"),
        ("banpubkey", ["abc"], "64 hex"),
        ("banpubkey", [42], "64 hex"),
        ("banpubkey", [KEY, 7], "reason must be a string"),
        ("banpubkey", [KEY, "x" * 1001], "at most"),
        ("banevent", ["zz" * 32], "64 hex"),
        ("allowkind", ["one"], "kind must be"),
        ("allowkind", [True], "kind must be"),
        ("allowkind", [70000], "kind must be"),
        ("allowkind", [-1], "kind must be"),
        ("blockip", ["300.1.1.1"], "ip must be"),
        ("blockip", [None], "ip must be"),
        ("changerelayname", [{"a": 1}], "name must be"),
        ("changerelayicon", ["javascript:alert(1)"], "http(s) URL"),
    ],
)
async def test_bad_params_are_refused_clearly(
    harness: Harness, method: str, params: list[Any], fragment: str
) -> None:
    status, answer = await harness.call(method, *params)
    assert status == 400
    assert answer["result"] is None and fragment in answer["error"]
    assert harness.announced == 0


async def test_events_kinds_and_ips(harness: Harness) -> None:
    event_id = "ef" * 32
    assert (await harness.call("banevent", event_id, "illegal"))[0] == 200
    assert harness.store.deleted == [event_id]
    assert (await harness.call("listbannedevents"))[1]["result"] == [
        {"id": event_id, "reason": "illegal"}
    ]
    await harness.call("allowevent", event_id)
    assert (await harness.call("listbannedevents"))[1]["result"] == []

    for kind in (7, 1, "30023"):
        await harness.call("allowkind", kind)
    await harness.call("disallowkind", 7)
    assert (await harness.call("listallowedkinds"))[1]["result"] == [1, 30023]

    await harness.call("blockip", "::ffff:10.0.0.9", "abuse")
    await harness.call("blockip", "2001:DB8::1")
    assert (await harness.call("listblockedips"))[1]["result"] == [
        {"ip": "10.0.0.9", "reason": "abuse"},
        {"ip": "2001:db8::1", "reason": ""},
    ]
    assert harness.moderation.blocks_ip("10.0.0.9")
    await harness.call("unblockip", "10.0.0.9")
    assert not harness.moderation.blocks_ip("10.0.0.9")


async def test_relay_info_changes_reach_the_nip11_document(harness: Harness) -> None:
    await harness.call("changerelayname", "renamed")
    await harness.call("changerelaydescription", "new words")
    await harness.call("changerelayicon", "https://example.com/icon.png")
    document = harness.moderation.apply_info({"name": "old", "description": "old"})
    assert document == {
        "name": "renamed",
        "description": "new words",
        "icon": "https://example.com/icon.png",
    }
    await harness.call("changerelayicon", "")
    assert "icon" not in harness.moderation.apply_info({"icon": "https://old.example/i.png"})


async def test_store_failures_and_bugs_answer_500(harness: Harness) -> None:
    harness.store.fail_with = psycopg.OperationalError("connection refused")
    status, answer = await harness.call("listbannedpubkeys")
    assert status == 500 and "database" in answer["error"]
    harness.store.fail_with = RuntimeError("a bug")
    status, answer = await harness.call("banpubkey", KEY)
    assert status == 500 and answer == {"result": None, "error": "error: internal error"}


def test_moderation_refusals() -> None:
    banned, allowed, stranger = Signer(), Signer(), Signer()
    note = banned.sign(1, "x")
    moderation = Moderation()
    assert moderation.refuse(note) is None  # nothing decided: everything passes
    moderation.replace(
        ModerationState(
            banned_pubkeys={banned.pubkey: ""},
            banned_events={"00" * 32: ""},
            allowed_pubkeys={allowed.pubkey: "", banned.pubkey: ""},
            allowed_kinds=frozenset({1}),
        )
    )
    rejection = moderation.refuse(note)
    assert rejection is not None and rejection.prefix is Prefix.BLOCKED  # a ban beats an allow
    assert moderation.refuse(allowed.sign(1, "ok")) is None
    rejection = moderation.refuse(stranger.sign(1, "who?"))
    assert rejection is not None and rejection.prefix is Prefix.RESTRICTED
    rejection = moderation.refuse(allowed.sign(7, "+"))
    assert rejection is not None and "kind 7" in rejection.message
    banned_id = msgspec.structs.replace(allowed.sign(1, "y"), id="00" * 32)
    rejection = moderation.refuse(banned_id)
    assert rejection is not None and "event is banned" in rejection.message


def test_blocked_ip_listeners_hear_only_changes() -> None:
    moderation = Moderation()
    heard: list[set[str]] = []
    moderation.on_blocked_ips.append(lambda blocked: heard.append(set(blocked)))
    moderation.replace(ModerationState(blocked_ips={"10.0.0.1": ""}))
    moderation.replace(ModerationState(blocked_ips={"10.0.0.1": ""}, allowed_kinds=frozenset({1})))
    moderation.replace(ModerationState())
    assert heard == [{"10.0.0.1"}, set()]


def test_request_urls_follow_host_and_trusted_proxy_scheme() -> None:
    settings = msgspec.convert({"network": {"public_url": "wss://relay.example.com"}}, Settings)
    direct = make_mocked_request("POST", "/", headers={"Host": "127.0.0.1:8080"})
    assert request_urls(direct, settings) == ["http://127.0.0.1:8080/", "wss://relay.example.com"]
    nginx = mock.Mock()
    nginx.get_extra_info.side_effect = lambda name, default=None: (
        ("127.0.0.1", 40000) if name == "peername" else default
    )
    proxied = make_mocked_request(
        "POST",
        "/?x=1",
        headers={
            "Host": "relay.example.com",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-For": "203.0.113.5",
        },
        transport=nginx,  # 127.0.0.1: a trusted proxy by default
    )
    assert request_urls(proxied, settings)[0] == "https://relay.example.com/?x=1"
    untrusted = msgspec.convert(
        {"rate_limits": {"trusted_proxies": []}, "network": {"public_url": ""}}, Settings
    )
    assert request_urls(proxied, untrusted)[0] == "http://relay.example.com/?x=1"
