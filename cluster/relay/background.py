"""A background task for as long as a block runs: every worker's periodic jobs (purge, metrics
flush, search index upkeep, archive, dashboard snapshots, moderation reloads) use this one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any


@contextlib.asynccontextmanager
async def running(coroutine: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """Run `coroutine` as a task named `name`; cancelled and awaited when the block ends."""
    task = asyncio.create_task(coroutine, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
