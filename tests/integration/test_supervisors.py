"""The PostgreSQL, Redis and nginx supervisors (cluster/services) against the real servers."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from cluster.services.nginx import NginxServer
from cluster.services.ports import free_port, wait_for_port
from cluster.services.postgres import AUTOPREWARM, PostgresServer, server_tuning
from cluster.services.redis import RedisServer


def test_free_port_is_bindable_and_wait_for_port_times_out() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    with pytest.raises(TimeoutError, match=str(port)):
        wait_for_port("127.0.0.1", port, timeout=0.3)


def test_wait_for_port_sees_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        wait_for_port("127.0.0.1", sock.getsockname()[1], timeout=5)


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    # The tuning `relay-cluster up` applies: a misspelt setting would stop the server starting.
    server = PostgresServer(
        tmp_path / "pgdata", free_port(), extra_settings=server_tuning(8 * 1024**3)
    )
    assert server.has_library("pg_prewarm") and not server.has_library("no_such_module")
    server.extra_settings.update(AUTOPREWARM)
    try:
        yield server
    finally:
        server.kill()


def test_postgres_data_survives_kill(postgres: PostgresServer) -> None:
    postgres.start(timeout=90)
    assert postgres.is_running()
    with psycopg.connect(postgres.url(), connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.execute("SHOW shared_buffers").fetchone() == ("1GB",)
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        assert conn.execute("SHOW fsync").fetchone() == ("on",)
        assert conn.execute("SHOW shared_preload_libraries").fetchone() == ("pg_prewarm",)
        conn.execute("CREATE TABLE survivors (name text)")
        conn.execute("INSERT INTO survivors VALUES ('kept')")
        conn.commit()

    postgres.kill()
    assert not postgres.is_running()
    postgres.start(timeout=90)  # same data dir and port: crash recovery
    with psycopg.connect(postgres.url(), connect_timeout=10) as conn:
        assert conn.execute("SELECT name FROM survivors").fetchall() == [("kept",)]

    postgres.stop()
    assert not postgres.is_running()


@pytest.mark.parametrize(
    ("memory_gib", "shared"),
    [(0.5, "128MB"), (2, "256MB"), (8, "1024MB"), (24, "3072MB"), (64, "4096MB")],
)
def test_server_tuning_scales_shared_buffers_with_memory(memory_gib: float, shared: str) -> None:
    settings = server_tuning(int(memory_gib * 1024**3))
    assert settings["shared_buffers"] == shared
    assert "fsync" not in settings and "synchronous_commit" not in settings


def test_postgres_reports_port_conflict(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        server = PostgresServer(tmp_path / "pgdata", sock.getsockname()[1])
        try:
            with pytest.raises(RuntimeError, match="exited"):
                server.start(timeout=90)
        finally:
            server.kill()
    assert not server.is_running()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


def _ping(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        return bool(client.ping())
    finally:
        client.close()


def test_redis_restarts_on_same_port(redis_server: RedisServer) -> None:
    redis_server.start(timeout=30)
    assert _ping(redis_server.url())
    redis_server.kill()
    assert not redis_server.is_running()
    with pytest.raises(redis.ConnectionError):
        _ping(redis_server.url())
    redis_server.start(timeout=30)
    assert _ping(redis_server.url(db=1))
    redis_server.stop()
    redis_server.start(timeout=30)
    assert _ping(redis_server.url())


def test_redis_context_manager_without_data_dir() -> None:
    with RedisServer(free_port()) as server:
        assert _ping(server.url())
    assert not server.is_running()


NGINX_CONF = """
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 '{body}'; }}
    }}
}}
"""


def _write_conf(prefix: Path, port: int, body: str = "ok") -> Path:
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, body=body))
    return conf


def _get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
        body: bytes = resp.read()
        return body.decode()


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[tuple[NginxServer, int]]:
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    port = free_port()
    server = NginxServer(_write_conf(prefix, port), prefix)
    try:
        yield server, port
    finally:
        server.kill()


def test_nginx_serves_reloads_and_restarts(nginx: tuple[NginxServer, int]) -> None:
    server, port = nginx
    server.test_config()
    server.start(timeout=30)
    assert server.is_running()
    assert _get(port) == "ok"

    _write_conf(server.prefix_dir, port, body="reloaded")
    server.reload()
    assert _get(port) == "reloaded"

    server.kill()
    assert not server.is_running()
    server.start(timeout=30)  # same port right after SIGKILL of master and workers
    assert _get(port) == "reloaded"
    server.stop()
    assert not server.is_running()


def test_nginx_waits_for_listen_addresses(tmp_path: Path) -> None:
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    port = free_port()
    with NginxServer(_write_conf(prefix, port), prefix, listen=[("127.0.0.1", port)]) as server:
        assert _get(port) == "ok"
    assert not server.is_running()


def test_nginx_broken_config_raises(tmp_path: Path) -> None:
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text("events {}\nhttp { server { bogus_directive on; } }\n")
    server = NginxServer(conf, prefix)
    with pytest.raises(RuntimeError, match="bogus_directive"):
        server.test_config()
    with pytest.raises(RuntimeError, match="exited"):
        server.start(timeout=30)
    assert not server.is_running()
