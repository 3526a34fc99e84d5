"""CircuitBreaker on a stepped clock: no sleeping, no node."""

from __future__ import annotations

import pytest

from cluster.payments.breaker import BreakerState, CircuitBreaker, Permit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def state(breaker: CircuitBreaker) -> BreakerState:
    """Read afresh (mypy would otherwise keep a state narrowed across the calls that change it)."""
    return breaker.state


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        permit = breaker.acquire()
        assert permit is not None
        breaker.failure(permit)


def test_opens_after_the_threshold_of_consecutive_failures(clock: Clock) -> None:
    breaker = CircuitBreaker(3, reset_after=30.0, clock=clock)
    fail(breaker, 2)
    assert state(breaker) is BreakerState.CLOSED
    fail(breaker)
    assert state(breaker) is BreakerState.OPEN and breaker.opened_total == 1
    assert breaker.acquire() is None
    assert breaker.retry_in() == 30.0


def test_a_success_resets_the_count(clock: Clock) -> None:
    breaker = CircuitBreaker(3, reset_after=30.0, clock=clock)
    fail(breaker, 2)
    breaker.success(Permit.NORMAL)
    fail(breaker, 2)
    assert state(breaker) is BreakerState.CLOSED and breaker.consecutive_failures == 2


def test_repeats_of_one_incident_count_once(clock: Clock) -> None:
    breaker = CircuitBreaker(2, reset_after=30.0, clock=clock)
    fail(breaker)
    for _ in range(5):
        breaker.failure(Permit.NORMAL, counted=False)
    assert state(breaker) is BreakerState.CLOSED


def test_half_open_after_reset_after_allows_one_trial(clock: Clock) -> None:
    breaker = CircuitBreaker(1, reset_after=30.0, clock=clock)
    fail(breaker)
    clock.now += 29.9
    assert breaker.acquire() is None and state(breaker) is BreakerState.OPEN
    clock.now += 0.1
    assert breaker.acquire() is Permit.TRIAL
    assert state(breaker) is BreakerState.HALF_OPEN
    assert breaker.acquire() is None  # one trial at a time


def test_a_successful_trial_closes(clock: Clock) -> None:
    breaker = CircuitBreaker(1, reset_after=30.0, clock=clock)
    fail(breaker)
    clock.now += 30
    trial = breaker.acquire()
    assert trial is Permit.TRIAL
    breaker.success(trial)
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.acquire() is Permit.NORMAL


def test_a_failed_trial_reopens_for_another_reset_after(clock: Clock) -> None:
    breaker = CircuitBreaker(5, reset_after=30.0, clock=clock)
    fail(breaker, 5)
    clock.now += 30
    trial = breaker.acquire()
    assert trial is Permit.TRIAL
    breaker.failure(trial, counted=False)  # a trial's failure reopens however it is counted
    assert state(breaker) is BreakerState.OPEN and breaker.opened_total == 2
    assert breaker.retry_in() == 30.0
    clock.now += 30
    assert breaker.acquire() is Permit.TRIAL


def test_an_abandoned_trial_frees_the_slot(clock: Clock) -> None:
    breaker = CircuitBreaker(1, reset_after=1.0, clock=clock)
    fail(breaker)
    clock.now += 1
    trial = breaker.acquire()
    assert trial is Permit.TRIAL
    breaker.release(trial)
    assert state(breaker) is BreakerState.HALF_OPEN
    assert breaker.acquire() is Permit.TRIAL


def test_every_state_change_is_reported_once(clock: Clock) -> None:
    seen: list[BreakerState] = []
    breaker = CircuitBreaker(1, reset_after=1.0, clock=clock, on_change=seen.append)
    fail(breaker)
    assert breaker.acquire() is None  # still open: no report
    clock.now += 1
    trial = breaker.acquire()
    assert trial is not None
    breaker.success(trial)
    breaker.success(Permit.NORMAL)  # already closed: no report
    assert seen == [
        BreakerState.CLOSED,
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]


def test_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(0, reset_after=1.0)
