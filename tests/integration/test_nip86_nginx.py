"""NIP-86 behind nginx (`relay-cluster up`: two instances, the test's PostgreSQL and Redis):
the NIP-98 `u` tag is the URL the client used (nginx passes `Host $http_host`, port included),
and blockip applies to the client's address as nginx forwards it, not to nginx's own."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cluster.nostr.signing import Signer
from cluster.services.launcher import ClusterProcess
from cluster.services.ports import free_port
from cluster.tools.admin import RPC_TYPE, call, signed_request
from tests.client import connect
from tests.services import migrated_database, unique_name

ADMIN = Signer()
PROPAGATION = 1.0
SOURCES = [f"127.0.1.{n}" for n in range(100, 108)]
"""Client addresses: nginx picks the instance by address (hash), so eight of them almost surely
reach both instances (which one serves which is not observable from here)."""


@pytest.fixture(scope="module")
async def nginx_database(postgres_server_url: str) -> AsyncIterator[str]:
    async with migrated_database(postgres_server_url, "relay_nip86_nginx") as url:
        yield url


@pytest.fixture(scope="module")
def cluster(nginx_database: str, redis_url: str) -> Iterator[ClusterProcess]:
    directory = Path(tempfile.mkdtemp(prefix="relay-nip86-"))  # see tests/cluster/conftest.py
    up = ClusterProcess(
        directory / "data",
        port=free_port(),
        instances=2,
        workers=1,
        env={
            "DATABASE_URL": nginx_database,
            "REDIS_URL": redis_url,
            "RELAY_REDIS__KEY_PREFIX": unique_name("nip86nginx") + ":",
            "RELAY_ADMIN__PUBKEYS": json.dumps([ADMIN.pubkey]),
        },
    )
    try:
        up.start()
        up.wait_ready()
        yield up
    finally:
        up.terminate()
        shutil.rmtree(directory, ignore_errors=True)


def nip11(port: int) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/", headers={"Accept": "application/nostr+json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        document: dict[str, Any] = json.loads(response.read())
    return document


@pytest.mark.timeout(300)
async def test_management_through_nginx(cluster: ClusterProcess) -> None:
    url = f"ws://127.0.0.1:{cluster.port}"
    status, answer = await call(url, ADMIN.secret, "changerelayname", ["behind nginx"])
    assert (status, answer) == (200, {"result": True}), cluster.transcript(40)
    # Signed for another port (here: an instance's own), sent to nginx: not this request's URL
    _, body, header = signed_request(
        f"ws://127.0.0.1:{cluster.port + 1}", ADMIN.secret, "supportedmethods", []
    )
    headers = {"Content-Type": RPC_TYPE, "Authorization": header}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{cluster.port}/", data=body, headers=headers) as response,
    ):
        refusal = await response.json(content_type=None)
    assert response.status == 401 and "u tag" in refusal["error"]
    assert nip11(cluster.port)["name"] == "behind nginx"

    author = Signer()
    status, answer = await call(url, ADMIN.secret, "banpubkey", [author.pubkey])
    assert status == 200
    decided = time.monotonic()
    for source in SOURCES:  # whichever instance each address is hashed to
        async with connect(url, source=source) as client:
            while (ok := await client.publish(author.sign(1, f"from {source}")))[2] is True:
                assert time.monotonic() - decided < PROPAGATION, f"{source}: still accepted"
                await asyncio.sleep(0.02)
            assert ok[3].startswith("blocked:"), (source, ok)

    blocked, *others = SOURCES
    status, answer = await call(url, ADMIN.secret, "blockip", [blocked])
    assert status == 200
    decided = time.monotonic()
    while True:  # the other instance hears of it within a second
        try:
            async with connect(url, source=blocked):
                pass
        except aiohttp.WSServerHandshakeError as refused:
            assert refused.status == 403
            break
        assert time.monotonic() - decided < PROPAGATION, "still connecting a second later"
        await asyncio.sleep(0.02)
    for source in others:  # nginx's own address is not what was blocked
        async with connect(url, source=source) as client:
            assert (await client.publish(Signer().sign(1, "fine")))[2] is True
