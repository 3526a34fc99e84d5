"""The rendered load-balancer config, checked by `nginx -t` and by a real nginx in front of two
tiny aiohttp upstreams: stickiness, skipping a dead instance, /health fall-through, WebSockets."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from cluster.services import nginx_config
from cluster.services.nginx import NginxServer
from cluster.services.nginx_config import (
    default_worker_user,
    render_nginx_config,
    write_nginx_config,
)
from cluster.services.ports import child_pids, free_port

TIMEOUT = aiohttp.ClientTimeout(total=10)


def test_render_contains_the_load_balancer_directives(tmp_path: Path) -> None:
    text = render_nginx_config(8080, [8101, 8102], tmp_path / "nginx", worker_processes=2)
    for directive in (
        "hash $remote_addr consistent;",
        "server 127.0.0.1:8101 max_fails=1 fail_timeout=5s;",
        "server 127.0.0.1:8102 max_fails=1 fail_timeout=5s;",
        "proxy_next_upstream error timeout http_502 http_503;",
        "proxy_next_upstream error timeout http_503;",
        "proxy_http_version 1.1;",
        "map $http_upgrade $connection_upgrade {",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_read_timeout 3600s;",
        "proxy_send_timeout 3600s;",
        "client_max_body_size 1m;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Real-IP $remote_addr;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "worker_processes 2;",
        "worker_connections 32768;",
        "worker_rlimit_nofile 70000;",
        "use epoll;",
        "multi_accept on;",
        "listen 127.0.0.1:8080 backlog=4096 reuseport;",
        f'pid "{tmp_path / "nginx"}/nginx.pid";',
    ):
        assert directive in text, directive
    assert "${" not in text
    directives = [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in directives if line.startswith(("daemon", "user"))]
    assert "user nobody nogroup;" in render_nginx_config(
        8080, [8101], tmp_path, user="nobody nogroup"
    )
    # `up` renders the descriptor limit it can actually grant (its own hard limit).
    assert "worker_rlimit_nofile 20000;" in render_nginx_config(
        8080, [8101], tmp_path, rlimit_nofile=20_000
    )
    with pytest.raises(ValueError, match="rlimit_nofile"):
        render_nginx_config(8080, [8101], tmp_path, rlimit_nofile=10)


def test_render_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="upstream"):
        render_nginx_config(8080, [], tmp_path)
    with pytest.raises(ValueError, match="quote"):
        render_nginx_config(8080, [8101], tmp_path / 'a"b')
    with pytest.raises(ValueError, match="user"):
        render_nginx_config(8080, [8101], tmp_path, user="nobody; daemon on")
    with pytest.raises(FileNotFoundError, match=r"relay\.conf\.template"):
        render_nginx_config(8080, [8101], tmp_path, template_path=tmp_path / "relay.conf.template")


def test_command_line_prints_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--listen-port", "8080", "--upstream", "8101", "--upstream", "8102"]
    assert nginx_config.main([*argv, "--prefix", str(tmp_path)]) == 0
    assert capsys.readouterr().out == render_nginx_config(8080, [8101, 8102], tmp_path)


def test_rendered_config_passes_nginx_t(tmp_path: Path) -> None:
    prefix = tmp_path / "nginx"
    conf = write_nginx_config(
        prefix / "nginx.conf",
        free_port(),
        [free_port(), free_port()],
        prefix,
        user=default_worker_user(),
    )
    NginxServer(conf, prefix).test_config()


@dataclass
class Upstream:
    """A tiny relay stand-in: `/` names itself (and echoes WebSockets), `/health` as told."""

    name: str
    port: int = field(default_factory=free_port)
    health_status: int = 200
    runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        async def root(request: web.Request) -> web.StreamResponse:
            if request.headers.get("Upgrade", "").lower() == "websocket":
                ws = web.WebSocketResponse()
                await ws.prepare(request)
                async for message in ws:
                    await ws.send_str(f"{self.name}:{message.data}")
                return ws
            return web.json_response(
                {
                    "name": self.name,
                    "accept": request.headers.get("Accept", ""),
                    "x_real_ip": request.headers.get("X-Real-IP"),
                    "x_forwarded_for": request.headers.get("X-Forwarded-For"),
                    "x_forwarded_proto": request.headers.get("X-Forwarded-Proto"),
                }
            )

        async def health(request: web.Request) -> web.Response:
            return web.json_response({"name": self.name}, status=self.health_status)

        app = web.Application()
        app.router.add_get("/", root)
        app.router.add_get("/health", health)
        return app

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app(), shutdown_timeout=1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def upstreams() -> AsyncIterator[list[Upstream]]:
    servers = [Upstream("a"), Upstream("b")]
    try:
        for server in servers:
            await server.start()
        yield servers
    finally:
        for server in servers:
            await server.stop()


@pytest.fixture
def balancer(tmp_path: Path, upstreams: list[Upstream]) -> Iterator[int]:
    """nginx with the rendered config in front of the two upstreams; yields its port."""
    prefix = tmp_path / "nginx"
    port = free_port()
    conf = write_nginx_config(
        prefix / "nginx.conf",
        port,
        [u.port for u in upstreams],
        prefix,
        user=default_worker_user(),
    )
    server = NginxServer(conf, prefix, listen=[("127.0.0.1", port)])
    server.test_config()
    server.start(timeout=30)
    try:
        yield port
    finally:
        server.stop()


async def get(
    port: int, path: str = "/", *, source: str = "127.0.0.1", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str]]:
    """GET through nginx from a chosen loopback source address (Linux routes all of 127/8)."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session,
        session.get(f"http://127.0.0.1:{port}{path}", headers=headers) as response,
    ):
        if response.content_type != "application/json":  # nginx's own error pages
            return response.status, {"nginx": await response.text()}
        body: dict[str, str] = await response.json()
        return response.status, body


async def test_same_client_address_sticks_to_one_upstream(balancer: int) -> None:
    names = {(await get(balancer))[1]["name"] for _ in range(20)}
    assert len(names) == 1, names

    # Different client addresses spread over both instances, each of them sticky too.
    chosen: dict[str, str] = {}
    for host in range(2, 22):
        source = f"127.0.0.{host}"
        seen = {(await get(balancer, source=source))[1]["name"] for _ in range(3)}
        assert len(seen) == 1, (source, seen)
        chosen[source] = seen.pop()
    assert set(chosen.values()) == {"a", "b"}, chosen


async def test_dead_upstream_is_skipped(balancer: int, upstreams: list[Upstream]) -> None:
    status, body = await get(balancer)
    assert status == 200
    first = next(u for u in upstreams if u.name == body["name"])
    other = next(u for u in upstreams if u is not first)

    await first.stop()
    for _ in range(10):
        status, body = await get(balancer)
        assert (status, body["name"]) == (200, other.name)


async def test_health_falls_through_a_503(balancer: int, upstreams: list[Upstream]) -> None:
    _, body = await get(balancer)
    first = next(u for u in upstreams if u.name == body["name"])
    other = next(u for u in upstreams if u is not first)

    first.health_status = 503
    for _ in range(5):
        assert await get(balancer, "/health") == (200, {"name": other.name})

    other.health_status = 503
    first.health_status = 503
    status, _ = await get(balancer, "/health")
    assert status in (502, 503)


async def test_headers_nip11_and_websocket_pass_through(balancer: int) -> None:
    status, body = await get(
        balancer, source="127.0.0.7", headers={"Accept": "application/nostr+json"}
    )
    assert status == 200
    assert body["accept"] == "application/nostr+json"
    assert body["x_real_ip"] == "127.0.0.7"
    assert body["x_forwarded_for"] == "127.0.0.7"
    assert body["x_forwarded_proto"] == "http"

    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.ws_connect(f"ws://127.0.0.1:{balancer}/") as ws,
    ):
        await ws.send_str("hello")
        reply = await ws.receive_str(timeout=10)
        assert reply in ("a:hello", "b:hello")


@pytest.mark.skipif(os.geteuid() != 0, reason="the user directive only matters for root")
def test_workers_drop_root(tmp_path: Path) -> None:
    prefix = tmp_path / "nginx"
    port = free_port()
    conf = write_nginx_config(
        prefix / "nginx.conf", port, [free_port()], prefix, user=default_worker_user()
    )
    with NginxServer(conf, prefix, listen=[("127.0.0.1", port)]) as server:
        assert server.pid is not None
        workers = child_pids(server.pid)
        assert workers
        for pid in workers:
            uid_line = next(
                line
                for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("Uid:")
            )
            assert uid_line.split()[1] != "0"


def test_handshake_limit_renders_off_or_with_its_exempt_networks(tmp_path: Path) -> None:
    off = render_nginx_config(8080, [8101], tmp_path)
    assert "limit_req" not in off and "client_header_timeout 10s;" in off
    on = render_nginx_config(
        8080, [8101], tmp_path, handshakes_per_second=4, exempt=["127.0.0.1", "::1/128"]
    )
    for directive in (
        "limit_req_zone $handshake_key zone=handshakes:10m rate=4r/s;",
        "limit_req zone=handshakes burst=20 nodelay;",
        "127.0.0.1/32 1;",
        "::1/128 1;",
        "limit_req_status 429;",
    ):
        assert directive in on, directive
    with pytest.raises(ValueError):
        render_nginx_config(8080, [8101], tmp_path, handshakes_per_second=-1)


async def test_nginx_answers_a_handshake_storm_itself(
    tmp_path: Path, upstreams: list[Upstream]
) -> None:
    """Past the burst, a counted address gets 429 from nginx; an exempt one never does, and a
    second counted address has a budget of its own."""
    prefix = tmp_path / "nginx"
    port = free_port()
    conf = write_nginx_config(
        prefix / "nginx.conf", port, [u.port for u in upstreams], prefix,
        user=default_worker_user(), handshakes_per_second=2, exempt=["127.0.0.1/32"],
    )  # fmt: skip
    server = NginxServer(conf, prefix, listen=[("127.0.0.1", port)])
    server.test_config()
    server.start(timeout=30)
    try:
        storm = [(await get(port, source="127.0.1.61"))[0] for _ in range(30)]
        assert storm[:10] == [200] * 10  # the burst: five seconds' worth
        assert storm.count(429) >= 15
        assert (await get(port, source="127.0.1.62"))[0] == 200
        assert {(await get(port))[0] for _ in range(30)} == {200}  # 127.0.0.1 is exempt
    finally:
        server.stop()
