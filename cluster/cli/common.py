"""What every `relay-cluster` command shares: the settings, loaded once, with flag overrides."""

from __future__ import annotations

import argparse
from typing import Any

from cluster.config import ConfigError, Settings, load_settings


def _network_overrides(args: argparse.Namespace) -> dict[str, Any]:
    network = {
        key: getattr(args, key)
        for key in ("host", "port", "workers")
        if getattr(args, key, None) is not None
    }
    return {"network": network} if network else {}


def load_for(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, overrides=_network_overrides(args))


def load_with_database(args: argparse.Namespace) -> Settings:
    """The settings of a command that needs PostgreSQL, refused with the fix when it has none."""
    settings = load_for(args)
    if not settings.database.url:
        raise ConfigError("database.url is not set: export DATABASE_URL=postgresql://...")
    return settings
