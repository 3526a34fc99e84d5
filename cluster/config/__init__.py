"""One typed settings object, loaded once from an optional TOML file plus the environment.

Environment overrides are named after the nesting: `RELAY_LIMITS__MAX_LIMIT=100` sets
`limits.max_limit`. The conventional `DATABASE_URL` and `REDIS_URL` set the service URLs.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from cluster.config.features import (
    AdminSettings,
    ArchiveSettings,
    NegentropySettings,
    SearchSettings,
)
from cluster.config.sections import (
    AuthSettings,
    DassieSettings,
    DatabaseSettings,
    InfoSettings,
    LimitSettings,
    LogSettings,
    NetworkSettings,
    PolicySettings,
    PricingSettings,
    QuerySettings,
    RateLimitSettings,
    RedisSettings,
)
from cluster.config.types import NonNegative, Port, Positive, Seconds

ENV_PREFIX = "RELAY_"
CONFIG_ENV = "RELAY_CONFIG"

__all__ = [
    "AdminSettings",
    "ArchiveSettings",
    "AuthSettings",
    "ConfigError",
    "DassieSettings",
    "DatabaseSettings",
    "InfoSettings",
    "LimitSettings",
    "LogSettings",
    "NegentropySettings",
    "NetworkSettings",
    "NonNegative",
    "PolicySettings",
    "Port",
    "Positive",
    "PricingSettings",
    "QuerySettings",
    "RateLimitSettings",
    "RedisSettings",
    "SearchSettings",
    "Seconds",
    "Settings",
    "load_settings",
    "settings_from_json",
    "settings_to_json",
]


class ConfigError(ValueError):
    """Configuration that cannot run; the message names the key and what is wrong."""


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    network: NetworkSettings = NetworkSettings()
    database: DatabaseSettings = DatabaseSettings()
    queries: QuerySettings = QuerySettings()
    redis: RedisSettings = RedisSettings()
    limits: LimitSettings = LimitSettings()
    info: InfoSettings = InfoSettings()
    pricing: PricingSettings = PricingSettings()
    dassie: DassieSettings = DassieSettings()
    logging: LogSettings = LogSettings()
    rate_limits: RateLimitSettings = RateLimitSettings()
    auth: AuthSettings = AuthSettings()
    policy: PolicySettings = PolicySettings()
    search: SearchSettings = SearchSettings()
    negentropy: NegentropySettings = NegentropySettings()
    admin: AdminSettings = AdminSettings()
    archive: ArchiveSettings = ArchiveSettings()

    def __post_init__(self) -> None:
        if self.pricing.any_priced and not self.dassie.url:
            raise ValueError("pricing needs dassie.url (DASSIE_RPC_URL) to verify payments")
        if self.dassie.url and len(self.dassie.token) < 32:
            raise ValueError("dassie.token (DASSIE_RPC_TOKEN) must be at least 32 characters")
        if self.limits.default_limit > self.limits.max_limit:
            raise ValueError("limits.default_limit must not exceed limits.max_limit")
        if self.database.pool_min > self.database.pool_max:
            raise ValueError("database.pool_min must not exceed database.pool_max")
        if self.queries.concurrency > self.database.pool_max:
            raise ValueError("queries.concurrency must not exceed database.pool_max")

    @property
    def query_concurrency(self) -> int:
        """queries.concurrency, or what the query pool leaves for REQ/COUNT when it is 0."""
        return self.queries.concurrency or max(1, self.database.pool_max - 2)

    @property
    def relay_url(self) -> str:
        return self.network.public_url or f"ws://{self.network.host}:{self.network.port}"


def _set_path(tree: dict[str, Any], path: list[str], value: str) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(path)}: {part} is not a section")
        node = child
    node[path[-1]] = value


def _env_value(name: str, value: str) -> Any:
    """Lists and tables come as JSON (`RELAY_RATE_LIMITS__EXEMPT='["10.0.0.0/8"]'`)."""
    if value.startswith(("[", "{")):
        try:
            return msgspec.json.decode(value)
        except msgspec.DecodeError as exc:
            raise ConfigError(f"{name}: not valid JSON: {exc}") from exc
    return value


def environment_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """Turn RELAY_SECTION__KEY variables (and DATABASE_URL, REDIS_URL) into a settings tree."""
    tree: dict[str, Any] = {}
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and "__" in name:
            path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
            _set_path(tree, path, _env_value(name, value))
    if env.get("DATABASE_URL"):
        _set_path(tree, ["database", "url"], env["DATABASE_URL"])
    if env.get("REDIS_URL"):
        _set_path(tree, ["redis", "url"], env["REDIS_URL"])
    if env.get("DASSIE_RPC_URL"):
        _set_path(tree, ["dassie", "url"], env["DASSIE_RPC_URL"])
    if env.get("DASSIE_RPC_TOKEN"):
        _set_path(tree, ["dassie", "token"], env["DASSIE_RPC_TOKEN"])
    if env.get("RELAY_PRICING"):
        tree.setdefault("pricing", {})["kinds"] = parse_pricing(env["RELAY_PRICING"])
    return tree


def parse_pricing(text: str) -> dict[str, str]:
    """`"1:10,30023:100"` → {"1": "10", "30023": "100"}; numbers are checked by the schema."""
    prices: dict[str, str] = {}
    for pair in filter(None, (part.strip() for part in text.split(","))):
        kind, sep, sats = pair.partition(":")
        if not sep or not kind.strip().isdigit() or not sats.strip().isdigit():
            raise ConfigError(f"RELAY_PRICING: '{pair}' is not kind:sats (e.g. 1:10,30023:100)")
        prices[kind.strip()] = sats.strip()
    return prices


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the TOML file (if any), apply environment then explicit overrides, validate once."""
    env = os.environ if env is None else env
    path = path or env.get(CONFIG_ENV) or None
    tree: dict[str, Any] = {}
    if path:
        try:
            tree = tomllib.loads(Path(path).read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    tree = _merge(tree, environment_overrides(env))
    tree = _merge(tree, overrides or {})
    try:
        # strict=False lets environment strings stand for numbers and booleans.
        return msgspec.convert(tree, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc


def settings_to_json(settings: Settings) -> bytes:
    return msgspec.json.encode(settings)


def settings_from_json(raw: bytes | str) -> Settings:
    return msgspec.json.decode(raw, type=Settings)
