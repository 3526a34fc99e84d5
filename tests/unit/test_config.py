"""Settings: file + environment, errors that name the key, the example file kept in sync."""

from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec
import pytest

from cluster.config import ConfigError, Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "relay.example.toml"


def test_example_file_lists_every_key_with_its_default() -> None:
    assert load_settings(EXAMPLE, env={}) == Settings()
    documented = tomllib.loads(EXAMPLE.read_text())
    for section, struct in msgspec.structs.asdict(Settings()).items():
        assert set(documented[section]) == set(msgspec.structs.asdict(struct)), section


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('[limits]\nmax_limit = 900\n[info]\nname = "from file"\n')
    settings = load_settings(
        path,
        env={
            "RELAY_LIMITS__MAX_LIMIT": "1200",
            "DATABASE_URL": "postgresql://db/x",
            "REDIS_URL": "redis://r:1/0",
        },
    )
    assert settings.limits.max_limit == 1200
    assert settings.info.name == "from file"
    assert settings.database.url == "postgresql://db/x"
    assert settings.redis.url == "redis://r:1/0"


def test_config_file_comes_from_relay_config_variable(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text("[network]\nworkers = 7\n")
    assert load_settings(env={"RELAY_CONFIG": str(path)}).network.workers == 7


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"RELAY_LIMITS__MAX_LIMITT": "1"}, "max_limitt"),
        ({"RELAY_LIMITS__MAX_LIMIT": "many"}, "$.limits.max_limit"),
        ({"RELAY_NETWORK__PORT": "70000"}, "$.network.port"),
        ({"RELAY_LIMITS__DEFAULT_LIMIT": "999999"}, "limits.default_limit"),
        ({"RELAY_DATABASE__POOL_MIN": "50"}, "database.pool_min"),
        ({"RELAY_NOSUCH__KEY": "1"}, "nosuch"),
    ],
)
def test_invalid_configuration_names_the_key(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("$", r"\$")):
        load_settings(env=env)


def test_bad_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml", env={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[network\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken, env={})
