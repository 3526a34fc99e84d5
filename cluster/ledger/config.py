"""The ledger node's start-up configuration: database URL and bearer token, checked (pure)."""

from __future__ import annotations

import os
from collections.abc import Mapping

TOKEN_ENV = "DASSIE_RPC_TOKEN"
DATABASE_ENVS = ("LEDGER_DATABASE_URL", "DATABASE_URL")
MIN_TOKEN_LENGTH = 32
DEFAULT_PORT = 5000
DEFAULT_RECIPIENT = "relay"


class LedgerConfigError(ValueError):
    """The ledger cannot start with this configuration; the message says what to fix."""


def check_token(token: str) -> str:
    """The RPC token, or LedgerConfigError when it is missing or too short to be a secret."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise LedgerConfigError(
            f"{TOKEN_ENV} must be at least {MIN_TOKEN_LENGTH} characters"
            f" (got {len(token)}); generate one with: openssl rand -hex 32"
        )
    return token


def ledger_config_from_env(
    env: Mapping[str, str] | None = None, database_url: str | None = None
) -> tuple[str, str]:
    """(database_url, token) from the environment, checked; database_url overrides the env."""
    env = os.environ if env is None else env
    url = database_url or next((env[name] for name in DATABASE_ENVS if env.get(name)), "")
    if not url:
        raise LedgerConfigError(
            "no database: set LEDGER_DATABASE_URL (or DATABASE_URL) to a PostgreSQL URL"
        )
    return url, check_token(env.get(TOKEN_ENV, ""))
