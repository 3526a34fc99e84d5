"""NIP-86 relay management against real relays: two processes (2 workers + 1 worker) on one
database and one Redis key prefix, every call signed by nostr-tools' nip98 and sent by node's
fetch, so the client side is independent code.

Decisions are cluster-wide: a call on one process must change what the other one does within a
second (the Redis invalidation), without restarting anything.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from cluster.nostr.signing import Signer
from cluster.tools.admin import call as admin_call
from tests.client import RelayClient, connect
from tests.nodejs import run_node
from tests.services import RelayProcess, RelayStarter, migrated_database, unique_name

ADMIN = Signer()
PROPAGATION = 1.0
"""Seconds within which a decision made on one process applies on the other."""

CALL_SCRIPT = """
import {readFileSync} from 'node:fs'
import * as nip98 from './node_modules/nostr-tools/lib/esm/nip98.js'
import {finalizeEvent} from './node_modules/nostr-tools/lib/esm/pure.js'
const input = JSON.parse(readFileSync(0, 'utf8'))
const sk = Uint8Array.from(Buffer.from(input.secret, 'hex'))
const payload = {method: input.method, params: input.params}
const headers = {'Content-Type': input.content_type}
if (input.sign) {
  headers['Authorization'] = await nip98.getToken(
    input.signed_url, input.signed_method, (e) => finalizeEvent(e, sk), true,
    input.signed_payload ?? payload)
}
const response = await fetch(input.url, {method: 'POST', headers, body: JSON.stringify(payload)})
process.stdout.write(JSON.stringify({status: response.status, body: await response.json()}))
"""


async def nip86(
    relay: RelayProcess,
    method: str,
    *params: Any,
    secret: str = ADMIN.secret,
    sign: bool = True,
    signed_url: str | None = None,
    signed_method: str = "POST",
    signed_payload: dict[str, Any] | None = None,
    content_type: str = "application/nostr+json+rpc",
) -> tuple[int, dict[str, Any]]:
    """One NIP-86 call made by nostr-tools (getToken) + node fetch: HTTP status, JSON body."""
    request = {
        "url": relay.http_url + "/",
        "secret": secret,
        "method": method,
        "params": list(params),
        "sign": sign,
        "signed_url": signed_url or relay.http_url,
        "signed_method": signed_method,
        "signed_payload": signed_payload,
        "content_type": content_type,
    }
    out = await asyncio.to_thread(run_node, CALL_SCRIPT, json.dumps(request).encode())
    answer = json.loads(out)
    return int(answer["status"]), dict(answer["body"])


async def ok(relay: RelayProcess, method: str, *params: Any) -> Any:
    status, body = await nip86(relay, method, *params)
    assert status == 200, body
    assert "error" not in body or body["error"] is None, body
    return body["result"]


def nip11(relay: RelayProcess) -> dict[str, Any]:
    request = urllib.request.Request(
        relay.http_url + "/", headers={"Accept": "application/nostr+json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        document: dict[str, Any] = json.loads(response.read())
    return document


@pytest.fixture(scope="module")
async def moderation_database(postgres_server_url: str) -> AsyncIterator[str]:
    """A database of their own: these decisions must not reach the session's other relays."""
    async with migrated_database(postgres_server_url, "relay_nip86") as url:
        yield url


@pytest.fixture(scope="module")
def relays(
    relay_env: dict[str, str],
    moderation_database: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RelayProcess, RelayProcess]]:
    starter = RelayStarter(relay_env, tmp_path_factory.mktemp("nip86"))
    shared = {
        "DATABASE_URL": moderation_database,
        "RELAY_REDIS__KEY_PREFIX": unique_name("nip86") + ":",  # one cluster: one prefix
        "RELAY_ADMIN__PUBKEYS": json.dumps([ADMIN.pubkey]),
    }
    try:
        first = starter.start(workers=2, **shared)
        second = starter.start(workers=1, **shared)
        yield first, second
    finally:
        starter.stop_all()


async def refused_within(client: RelayClient, signer: Signer, kind: int, seconds: float) -> str:
    """Publish fresh events until one is refused; its OK message (fails after `seconds`)."""
    deadline = time.monotonic() + seconds
    while True:
        answer = await client.publish(signer.sign(kind, f"probe {time.monotonic()}"))
        if answer[2] is False:
            return str(answer[3])
        if time.monotonic() > deadline:
            raise AssertionError(f"still accepted {seconds}s after the decision")
        await asyncio.sleep(0.05)


async def accepted_within(client: RelayClient, signer: Signer, kind: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        answer = await client.publish(signer.sign(kind, f"probe {time.monotonic()}"))
        if answer[2] is True:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"still refused {seconds}s after the decision: {answer}")
        await asyncio.sleep(0.05)


async def test_requests_not_signed_by_an_admin_are_refused(
    relays: tuple[RelayProcess, RelayProcess],
) -> None:
    relay, _ = relays
    target = Signer().pubkey
    refusals = [
        (await nip86(relay, "banpubkey", target, sign=False), "missing Authorization"),
        (await nip86(relay, "banpubkey", target, secret=Signer().secret), "may not manage"),
        (await nip86(relay, "banpubkey", target, signed_url="http://127.0.0.1:1/"), "u tag"),
        (await nip86(relay, "banpubkey", target, signed_method="GET"), "method"),
        (  # a header signed for another body
            await nip86(relay, "banpubkey", target, signed_payload={"method": "supportedmethods"}),
            "payload",
        ),
    ]
    for (status, body), reason in refusals:
        assert status == 401, body
        assert body["result"] is None and reason in body["error"], body
    status, body = await nip86(relay, "supportedmethods", content_type="application/json")
    assert status == 415 and body["error"]
    assert await ok(relay, "listbannedpubkeys") == []  # nothing was banned by any of them


async def test_supported_methods_and_nip11_advertise_nip86(
    relays: tuple[RelayProcess, RelayProcess],
) -> None:
    relay, _ = relays
    methods = await ok(relay, "supportedmethods")
    assert {"banpubkey", "listbannedpubkeys", "banevent", "allowkind", "blockip"} <= set(methods)
    assert 86 in nip11(relay)["supported_nips"]
    # the relay's ws:// URL is a valid `u` too (NIP-86: "the u tag is the relay URL")
    status, body = await nip86(relay, "supportedmethods", signed_url=relay.url)
    assert status == 200 and body["result"] == methods


async def test_a_ban_on_one_process_refuses_the_next_event_on_the_other(
    relays: tuple[RelayProcess, RelayProcess],
) -> None:
    first, second = relays
    author = Signer()
    async with (
        connect(second.url) as on_second,
        connect(first.url) as on_first_a,
        connect(first.url) as on_first_b,
    ):
        assert (await on_second.publish(author.sign(1, "before the ban")))[2] is True
        assert await ok(first, "banpubkey", author.pubkey, "spam") is True
        decided = time.monotonic()
        message = await refused_within(on_second, author, 1, PROPAGATION)
        assert time.monotonic() - decided < PROPAGATION
        assert message.startswith("blocked:")
        for client in (on_first_a, on_first_b):  # the deciding process: no delay at all
            answer = await client.publish(author.sign(1, "after the ban"))
            assert answer[2] is False and answer[3].startswith("blocked:")
        assert (await on_second.publish(Signer().sign(1, "others still write")))[2] is True
        assert await ok(second, "listbannedpubkeys") == [
            {"pubkey": author.pubkey, "reason": "spam"}
        ]
        assert await ok(second, "unbanpubkey", author.pubkey) is True
        await accepted_within(on_first_a, author, 1, PROPAGATION)


async def test_banevent_removes_it_from_results_and_refuses_it_until_allowed(
    relays: tuple[RelayProcess, RelayProcess],
) -> None:
    first, second = relays
    author = Signer()
    event = author.sign(1, "to be banned")
    async with connect(first.url) as on_first, connect(second.url) as on_second:
        assert (await on_first.publish(event))[2] is True
        assert [e["id"] for e in await on_second.query("s", {"ids": [event.id]})] == [event.id]
        assert await ok(second, "banevent", event.id, "illegal") is True
        assert await on_first.query("a", {"ids": [event.id]}) == []
        assert await on_second.query("b", {"authors": [author.pubkey]}) == []
        assert await ok(first, "listbannedevents") == [{"id": event.id, "reason": "illegal"}]
        deadline = time.monotonic() + PROPAGATION
        while (answer := await on_first.publish(event))[2] is True:
            assert time.monotonic() < deadline, "the banned event was stored again"
            await asyncio.sleep(0.05)
        assert answer[3].startswith("blocked:")
        assert await ok(first, "allowevent", event.id) is True
        assert (await on_first.publish(event))[2] is True  # the deciding process, at once
        assert [e["id"] for e in await on_second.query("c", {"ids": [event.id]})] == [event.id]


async def test_allow_lists_of_pubkeys_and_kinds(
    relays: tuple[RelayProcess, RelayProcess],
) -> None:
    first, second = relays
    friend, stranger = Signer(), Signer()
    async with connect(second.url) as on_second:
        try:
            assert await ok(first, "allowpubkey", friend.pubkey, "known") is True
            message = await refused_within(on_second, stranger, 1, PROPAGATION)
            assert message.startswith("restricted:")
            assert (await on_second.publish(friend.sign(1, "allowed")))[2] is True
            assert await ok(second, "listallowedpubkeys") == [
                {"pubkey": friend.pubkey, "reason": "known"}
            ]
            assert await ok(first, "unallowpubkey", friend.pubkey) is True
            await accepted_within(on_second, stranger, 1, PROPAGATION)

            assert await ok(first, "allowkind", 1) is True
            message = await refused_within(on_second, stranger, 7, PROPAGATION)
            assert message.startswith("restricted:") and "kind 7" in message
            assert (await on_second.publish(stranger.sign(1, "kind 1 is fine")))[2] is True
            assert await ok(second, "listallowedkinds") == [1]
        finally:
            await ok(first, "unallowpubkey", friend.pubkey)
            await ok(first, "disallowkind", 1)
        await accepted_within(on_second, stranger, 7, PROPAGATION)


async def test_blockip_refuses_new_connections_and_closes_open_ones(
    relays: tuple[RelayProcess, RelayProcess],
) -> None:
    first, second = relays
    blocked, other = "127.0.1.86", "127.0.1.87"
    async with connect(second.url, source=blocked) as open_on_second:
        try:
            assert await ok(first, "blockip", blocked, "abuse") is True
            message = await open_on_second.ws.receive(timeout=PROPAGATION + 1)
            assert message.type == aiohttp.WSMsgType.CLOSE, message
            assert message.data == 1008 and str(message.extra).startswith("blocked:")
            for relay in relays:
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    async with connect(relay.url, source=blocked):
                        pass
                assert refused.value.status == 403
            async with connect(second.url, source=other) as fine:
                assert (await fine.publish(Signer().sign(1, "not blocked")))[2] is True
            assert await ok(second, "listblockedips") == [{"ip": blocked, "reason": "abuse"}]
        finally:
            assert await ok(second, "unblockip", blocked) is True
    async with connect(first.url, source=blocked) as again:  # the deciding process, at once
        assert (await again.publish(Signer().sign(1, "unblocked")))[2] is True


async def test_relay_info_changes_show_in_nip11_on_every_process(
    relays: tuple[RelayProcess, RelayProcess],
) -> None:
    first, second = relays
    assert await ok(first, "changerelayname", "renamed by NIP-86") is True
    assert await ok(first, "changerelaydescription", "a managed relay") is True
    assert await ok(first, "changerelayicon", "https://example.com/icon.png") is True
    deadline = time.monotonic() + PROPAGATION
    for relay in (first, second):
        while (document := nip11(relay)).get("icon") != "https://example.com/icon.png":
            assert time.monotonic() < deadline, document
            await asyncio.sleep(0.05)
        assert document["name"] == "renamed by NIP-86"
        assert document["description"] == "a managed relay"
        assert document["icon"] == "https://example.com/icon.png"
    status, body = await nip86(second, "changerelayicon", "javascript:alert(1)")
    assert status == 400 and "http(s)" in body["error"]


async def test_our_own_client_and_the_admin_command(
    relays: tuple[RelayProcess, RelayProcess],
) -> None:
    """cluster/tools/admin.py signs with cluster/nostr/signing.py: the same checks apply."""
    first, second = relays
    status, answer = await admin_call(second.url, ADMIN.secret, "allowkind", ["30023"])
    assert (status, answer) == (200, {"result": True})
    status, answer = await admin_call(second.url, Signer().secret, "disallowkind", ["30023"])
    assert status == 401 and answer["result"] is None
    command = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cluster.cli",
        "admin",
        "--relay",
        first.url,
        "--secret",
        ADMIN.secret,
        "listallowedkinds",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(command.communicate(), 60)
    assert command.returncode == 0
    assert json.loads(out) == {"result": [30023]}
    assert await ok(first, "disallowkind", 30023) is True
