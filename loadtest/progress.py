"""The bench's progress lines: one stamped line per step, flushed at once (runs take minutes)."""

from __future__ import annotations

import time


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[bench {stamp}] {message}", flush=True)
