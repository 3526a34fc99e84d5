"""The idle timeout of a connection: one timer per connection, re-armed only when it fires.

`ws.receive(timeout=...)` builds and cancels a timeout context for every message, a cost paid
per EVENT on a busy connection; here a message costs one `loop.time()` call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class IdleWatchdog:
    """Calls `on_idle` after `timeout` seconds with nothing received.

    `on_idle` returns True when it closed the connection; False keeps waiting for another full
    timeout (a connection with open subscriptions may stay quiet).
    """

    def __init__(self, timeout: float, on_idle: Callable[[], bool]) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._on_idle = on_idle
        self._last = self._loop.time()
        self._handle = self._loop.call_later(timeout, self._check)

    def touch(self) -> None:
        self._last = self._loop.time()

    def cancel(self) -> None:
        self._handle.cancel()

    def _check(self) -> None:
        now = self._loop.time()
        if now - self._last >= self._timeout:
            if self._on_idle():
                return
            self._last = now
        self._handle = self._loop.call_later(self._last + self._timeout - now, self._check)
