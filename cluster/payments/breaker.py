"""A consecutive-failure circuit breaker with one trial call, on an injected clock (pure).

After `failure_threshold` consecutive failures it opens and calls fail at once for `reset_after`
seconds; then one trial call goes through (half-open): success closes the breaker, failure opens
it again. The clock is a parameter so tests step time instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Permit(StrEnum):
    NORMAL = "normal"
    TRIAL = "trial"


class CircuitBreaker:
    """Consecutive-failure breaker with a single trial call after `reset_after` seconds.

    `on_change` hears every state change (the Dassie client exports it as a gauge), so the
    breaker itself stays free of metrics.
    """

    def __init__(
        self,
        failure_threshold: int,
        reset_after: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.reset_after = reset_after
        self.clock = clock
        self._on_change = on_change
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self.opened_at = 0.0
        self.opened_total = 0
        self._trial_running = False
        if on_change is not None:
            on_change(self.state)

    def acquire(self) -> Permit | None:
        """May a call go to the node now? None means fail fast."""
        if self.state is BreakerState.CLOSED:
            return Permit.NORMAL
        if self.state is BreakerState.OPEN and self.clock() - self.opened_at >= self.reset_after:
            self._become(BreakerState.HALF_OPEN)
        if self.state is BreakerState.HALF_OPEN and not self._trial_running:
            self._trial_running = True
            return Permit.TRIAL
        return None

    def retry_in(self) -> float:
        return max(0.0, self.opened_at + self.reset_after - self.clock())

    def success(self, permit: Permit) -> None:
        if permit is Permit.TRIAL:
            self._trial_running = False
        self._become(BreakerState.CLOSED)
        self.consecutive_failures = 0

    def failure(self, permit: Permit, counted: bool = True) -> None:
        """Record a failed call; counted=False for a repeat of an incident already recorded."""
        if permit is Permit.TRIAL:
            self._trial_running = False
            self._open()
            return
        if not counted:
            return
        self.consecutive_failures += 1
        if (
            self.state is BreakerState.CLOSED
            and self.consecutive_failures >= self.failure_threshold
        ):
            self._open()

    def release(self, permit: Permit) -> None:
        """The call was abandoned (cancelled) before it told us anything about the node."""
        if permit is Permit.TRIAL:
            self._trial_running = False

    def _open(self) -> None:
        if self.state is not BreakerState.OPEN:
            self.opened_total += 1
        self._become(BreakerState.OPEN)
        self.opened_at = self.clock()

    def _become(self, state: BreakerState) -> None:
        if state is not self.state:
            self.state = state
            if self._on_change is not None:
                self._on_change(state)
