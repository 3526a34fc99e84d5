"""Process set-up shared by the load tools: enough file descriptors and the uvloop loop."""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def raise_nofile_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (many sockets); returns the new (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop (a dependency of the relay): the generator's per-message cost is lower."""
    return uvloop.run(coro)
