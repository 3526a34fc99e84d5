"""The one Redis client factory: plain URL or Sentinel, and what it takes from the URL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cluster.bus.redis_clients import SentinelRedis, redis_from_settings, sentinel_addresses
from cluster.config import ConfigError, RedisSettings, load_settings


async def test_without_sentinels_the_url_is_used() -> None:
    client = redis_from_settings(RedisSettings(url="redis://:pw@h:7/3"), socket_timeout=1)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == ("h", 7, 3, "pw")
    assert not isinstance(client, SentinelRedis)
    await client.aclose()


async def test_with_sentinels_the_url_gives_only_credentials_database_and_tls() -> None:
    settings = RedisSettings(
        url="rediss://u:pw@ignored:1/2",
        sentinels=["10.0.0.1:26379", "[fd00::1]:26380"],
        sentinel_service="relay",
        sentinel_password="spw",
    )
    client = redis_from_settings(settings, socket_timeout=0.5)
    assert isinstance(client, SentinelRedis)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["username"] == "u" and kwargs["password"] == "pw" and kwargs["db"] == 2
    assert "host" not in kwargs and kwargs["socket_timeout"] == 0.5
    assert "SSL" in client.connection_pool.connection_class.__name__
    manager = client.sentinel_manager
    assert manager is not None
    sentinel_kwargs = manager.sentinels[0].connection_pool.connection_kwargs
    assert sentinel_kwargs["password"] == "spw" and sentinel_kwargs["socket_timeout"] == 0.5
    assert sentinel_addresses(settings) == [("10.0.0.1", 26379), ("fd00::1", 26380)]
    await client.aclose()


def test_sentinels_come_from_the_environment_and_bad_addresses_are_refused() -> None:
    settings = load_settings(
        env={"RELAY_REDIS__SENTINELS": '["a:26379","b:26379"]', "REDIS_URL": "redis://x/0"}
    )
    assert settings.redis.sentinels == ["a:26379", "b:26379"]
    with pytest.raises(ConfigError, match="sentinels"):
        load_settings(env={"RELAY_REDIS__SENTINELS": '["a"]'})


def test_no_redis_client_is_created_outside_the_factory() -> None:
    """Sentinel applies everywhere only if every client comes from redis_from_settings."""
    root = Path(__file__).resolve().parents[3] / "cluster"
    creators = re.compile(r"\bfrom_url\(|\bRedis\(|\bSentinel\(|\bmaster_for\(")
    offenders = [
        f"{path.relative_to(root)}:{number}"
        for path in root.rglob("*.py")
        if path.name != "redis_clients.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if creators.search(line)
    ]
    assert offenders == []
