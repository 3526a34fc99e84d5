"""The idle watchdog: fires after a quiet timeout, not while messages arrive, and may wait on."""

from __future__ import annotations

import asyncio

from cluster.relay.idle import IdleWatchdog


async def test_fires_once_after_a_quiet_timeout() -> None:
    fired: list[float] = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    watchdog = IdleWatchdog(0.05, lambda: fired.append(loop.time() - started) or True)
    await asyncio.sleep(0.2)
    watchdog.cancel()
    assert len(fired) == 1
    assert fired[0] >= 0.05


async def test_touches_keep_it_from_firing() -> None:
    fired: list[int] = []
    watchdog = IdleWatchdog(0.08, lambda: fired.append(1) or True)
    for _ in range(10):
        await asyncio.sleep(0.02)
        watchdog.touch()
    assert fired == []
    await asyncio.sleep(0.15)
    watchdog.cancel()
    assert fired == [1]


async def test_declining_waits_a_full_timeout_again() -> None:
    calls: list[int] = []

    def on_idle() -> bool:
        calls.append(1)
        return len(calls) >= 3  # keeps the connection twice, closes on the third

    watchdog = IdleWatchdog(0.03, on_idle)
    await asyncio.sleep(0.25)
    watchdog.cancel()
    assert len(calls) == 3


async def test_cancel_stops_it() -> None:
    fired: list[int] = []
    watchdog = IdleWatchdog(0.03, lambda: fired.append(1) or True)
    watchdog.cancel()
    await asyncio.sleep(0.08)
    assert fired == []
