"""Known-answer data from ../shared/vectors (signed by an independent client library)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"


@cache
def load(name: str) -> dict[str, Any]:
    path = VECTORS / name
    if not path.exists():
        raise FileNotFoundError(f"test vectors missing: {path} (shared/ must sit beside the repo)")
    data: dict[str, Any] = json.loads(path.read_text())
    return data
