"""The command line: invalid configuration stops start-up with a message naming the key."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_refuses_bad_configuration_naming_the_key() -> None:
    result = run_cli(
        "serve", "--port", "1", env={"RELAY_LIMITS__MAX_LIMIT": "lots", "DATABASE_URL": "x"}
    )
    assert result.returncode == 2
    assert "$.limits.max_limit" in result.stderr


def test_serve_requires_a_database_url() -> None:
    env = {"DATABASE_URL": "", "REDIS_URL": "redis://127.0.0.1:1/0"}
    result = run_cli("serve", env=env)
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr


def test_migrate_applies_and_is_idempotent(database_url: str) -> None:
    result = run_cli("migrate", env={"DATABASE_URL": database_url})
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
