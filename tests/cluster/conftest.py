"""Fixtures for cluster tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Outside pytest's tmp dir on purpose: as root, PostgreSQL runs as an unprivileged user
    that must traverse every ancestor, and any pytest run resets /tmp/pytest-of-<user> to 0700."""
    path = Path(tempfile.mkdtemp(prefix="relay-up-test-"))
    try:
        yield path / "data"
    finally:
        shutil.rmtree(path, ignore_errors=True)
