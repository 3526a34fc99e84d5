"""nginx/compose.conf (the compose cluster's front door) passes `nginx -t`, and so does the
config embedded in the Akash SDL; none of the shipped nginx configs routes /metrics.

`nginx -t` resolves upstream host names, and `relay` exists only on the compose network, so
the test names `localhost` instead; everything else is tested as shipped. The compose config
uses `server ... resolve` (nginx >= 1.27.3, the version in the compose file's nginx image); an
older local nginx gets that one parameter removed, and the image version is checked.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from cluster.services.nginx import NginxServer, find_nginx
from cluster.services.nginx_config import default_worker_user, render_nginx_config
from cluster.services.ports import free_port
from tests.deploy import AKASH_SDL, COMPOSE_FILE, COMPOSE_NGINX_CONF, load_yaml

RESOLVE_SINCE = (1, 27, 3)


def local_nginx_version() -> tuple[int, ...]:
    result = subprocess.run(
        [str(find_nginx()), "-v"], capture_output=True, text=True, timeout=10, check=False
    )
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", result.stderr + result.stdout)
    assert match, result.stderr
    return tuple(int(part) for part in match.groups())


def for_local_test(conf: str) -> str:
    """The config with its upstream pointed at this machine (see the module docstring)."""
    text = conf.replace("server relay:8008", "server localhost:8008")
    if local_nginx_version() < RESOLVE_SINCE:
        text = text.replace(" resolve ", " ")
    assert "relay:" not in text
    return text


def nginx_test(conf: str, tmp_path: Path) -> None:
    path = tmp_path / "nginx.conf"
    path.write_text(conf)
    NginxServer(path, tmp_path / "prefix").test_config()


def akash_nginx_conf() -> str:
    script = load_yaml(AKASH_SDL)["services"]["nginx"]["args"][0]
    match = re.search(r"<<'NGINX'\n(.*?)\nNGINX\n", script, re.S)
    assert match, "the nginx service no longer writes its config from a quoted heredoc"
    return match.group(1)


@pytest.fixture(scope="module", autouse=True)
def _nginx_installed() -> None:
    try:
        find_nginx()
    except FileNotFoundError as exc:  # pragma: no cover - make system-deps installs it
        pytest.fail(f"{exc} (scripts/install-system-deps.sh)")


def test_compose_nginx_conf_passes_nginx_t(tmp_path: Path) -> None:
    nginx_test(for_local_test(COMPOSE_NGINX_CONF.read_text()), tmp_path)


def test_a_broken_config_fails_nginx_t(tmp_path: Path) -> None:
    broken = for_local_test(COMPOSE_NGINX_CONF.read_text()).replace(
        "proxy_read_timeout 3600s;", "proxy_read_timeout 3600s", 1
    )
    with pytest.raises(RuntimeError, match="nginx config test failed"):
        nginx_test(broken, tmp_path)
    unknown = for_local_test(COMPOSE_NGINX_CONF.read_text()).replace(
        "keepalive 64;", "keepalive_forever 64;"
    )
    with pytest.raises(RuntimeError, match="unknown directive"):
        nginx_test(unknown, tmp_path)


def test_compose_nginx_conf_keeps_the_load_balancing_rules() -> None:
    text = COMPOSE_NGINX_CONF.read_text()
    for directive in (
        "hash $remote_addr consistent;",
        "server relay:8008 resolve max_fails=1 fail_timeout=5s;",
        "zone relay_instances",
        "resolver 127.0.0.11 valid=10s",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_read_timeout 3600s;",
        "proxy_next_upstream error timeout http_502 http_503;",
        "listen 8080",
        "pid /tmp/nginx.pid;",
        "location = /health",
        "location = /nginx-health",
    ):
        assert directive in text, directive
    assert not re.search(r"^\s*(user|daemon)\s", text, re.M)


def test_the_compose_nginx_image_supports_resolve() -> None:
    image = load_yaml(COMPOSE_FILE)["services"]["nginx"]["image"]
    match = re.fullmatch(r"nginxinc/nginx-unprivileged:(\d+)\.(\d+)\.(\d+)-alpine", image)
    assert match, image
    assert tuple(int(part) for part in match.groups()) >= RESOLVE_SINCE


def test_akash_nginx_conf_passes_nginx_t(tmp_path: Path) -> None:
    nginx_test(for_local_test(akash_nginx_conf()), tmp_path)


def test_akash_nginx_conf_proxies_websockets_to_the_relays() -> None:
    text = akash_nginx_conf()
    for directive in (
        "server relay:8008;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "listen 8080",
        "real_ip_header X-Forwarded-For;",
    ):
        assert directive in text, directive


# --- /metrics is never routed publicly (issue 13) ---------------------------------------------

METRICS_BLOCK = re.compile(r"location \^~ /metrics \{[^}]*\breturn 404;[^}]*\}")
# Spellings nginx normalises to /metrics before it picks a location (decoding, merged slashes).
METRICS_PATHS = (
    "/metrics",
    "/metrics/",
    "/metrics?name=x",
    "//metrics",
    "/%6Detrics",
    "/x/../metrics",
)


def refuses_metrics(conf: str) -> bool:
    """The config answers /metrics (and everything under it) itself with 404."""
    return bool(METRICS_BLOCK.search(conf))


def test_every_shipped_nginx_config_refuses_metrics(tmp_path: Path) -> None:
    rendered = render_nginx_config(8080, [8101], tmp_path)
    for name, conf in (
        ("relay.conf.template", rendered),
        ("compose.conf", COMPOSE_NGINX_CONF.read_text()),
        ("akash", akash_nginx_conf()),
    ):
        assert refuses_metrics(conf), name
        assert not refuses_metrics(METRICS_BLOCK.sub("", conf)), name  # the check can fail


async def test_the_rendered_nginx_never_proxies_metrics(tmp_path: Path) -> None:
    """nginx in front of an upstream that would serve anything: /metrics never reaches it."""
    reached: list[str] = []

    async def anything(request: web.Request) -> web.Response:
        reached.append(request.path)
        return web.Response(text="upstream\n")

    upstream = web.Application()
    upstream.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(upstream, access_log=None)
    await runner.setup()
    upstream_port, listen_port = free_port(), free_port()
    await web.TCPSite(runner, "127.0.0.1", upstream_port).start()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        render_nginx_config(
            listen_port, [upstream_port], tmp_path / "prefix", user=default_worker_user()
        )
    )
    nginx = NginxServer(conf, tmp_path / "prefix", listen=[("127.0.0.1", listen_port)])
    nginx.start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            for path in METRICS_PATHS:
                url = URL(f"http://127.0.0.1:{listen_port}{path}", encoded=True)
                async with session.get(url) as response:
                    assert response.status == 404, path
            async with session.get(f"http://127.0.0.1:{listen_port}/health") as response:
                assert response.status == 200 and await response.text() == "upstream\n"
    finally:
        nginx.stop()
        await runner.cleanup()
    assert reached == ["/health"]
