"""Publish at each offered rate in turn: where the relay stops keeping up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from loadtest.presign import FREE_KIND
from loadtest.results import PublishResult, SweepResult
from loadtest.scenarios.publish import run_publish


def _quiet(line: str) -> None:
    pass


async def run_sweep(
    url: str,
    *,
    rates: Sequence[float],
    duration: float,
    connections: int = 50,
    kind: int = FREE_KIND,
    sources: int = 32,
    pause: float = 2.0,
    stop_after_failures: int = 2,
    log: Callable[[str], None] = _quiet,
) -> SweepResult:
    """Publish at each rate in turn; stops early after `stop_after_failures` overloaded steps."""
    steps: list[PublishResult] = []
    overloaded = 0
    for rate in rates:
        log(f"sweep: {rate:g} events/s for {duration:g}s")
        step = await run_publish(
            url, rate=rate, duration=duration, connections=connections, kind=kind, sources=sources
        )
        steps.append(step)
        kept_up = step.achieved_rate >= 0.99 * rate and step.error_count == 0
        overloaded = 0 if kept_up else overloaded + 1
        if overloaded >= stop_after_failures:
            break
        await asyncio.sleep(pause)
    return SweepResult(scenario="sweep", duration_s=duration, steps=steps)
