"""The services of `relay-cluster up` as one ordered list: started in order, stopped in reverse.

A `Service` is one thing `up` provides (PostgreSQL, Redis, the ledger, the relay instances,
nginx); it owns zero or more `Supervised` processes. `ServiceList` is the only place that knows
the order rules, so every exit path (a clean stop, Ctrl-C or SIGTERM, a start that fails half
way) stops exactly what was started, newest first. No processes here: the rules are tested with
fake services.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

RESTART_LIMIT = 5
RESTART_WINDOW = 60.0


class ClusterError(RuntimeError):
    """The cluster cannot start or keep running; the message says why."""


@dataclass(frozen=True)
class ServiceRow:
    """One line of the summary and of cluster.json's `services`: what runs where."""

    name: str
    pid: int | None
    url: str
    log: str

    def as_json(self) -> dict[str, Any]:
        """The keys cluster.json has always had (`relay-cluster env`, tests, the bench)."""
        return {"name": self.name, "pid": self.pid, "url": self.url, "log": self.log}


class Supervised(Protocol):
    """One process the supervision loop watches and restarts when it exits."""

    @property
    def name(self) -> str: ...

    def is_running(self) -> bool: ...

    def restart(self) -> None: ...

    def exit_detail(self) -> str:
        """How it exited, e.g. " with code 1; <log> ends with: ...", or "" when unknown."""
        ...


class Service(Protocol):
    """One entry of the list: started once, described while up, stopped once."""

    @property
    def name(self) -> str: ...

    def start(self) -> None:
        """Start and wait until usable; on failure leave `children()` describing what to stop."""
        ...

    def stop(self) -> None: ...

    def describe(self) -> list[ServiceRow]: ...

    def children(self) -> Sequence[Supervised]:
        """The processes this service started; none for an external server (nothing to stop)."""
        ...


@dataclass
class RestartBudget:
    """At most `limit` restarts within any `window` seconds."""

    limit: int = RESTART_LIMIT
    window: float = RESTART_WINDOW
    clock: Callable[[], float] = time.monotonic
    times: deque[float] = field(default_factory=deque)

    def allow(self) -> bool:
        now = self.clock()
        while self.times and now - self.times[0] > self.window:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return False
        self.times.append(now)
        return True


class ServiceList:
    """Start services in order, stop the ones started (or starting) in reverse order.

    A service counts as started from the moment its start() is called, not when it returns: a
    start that fails or is interrupted by a signal half way (instance 1 of 2 running) has
    processes to stop too. Stopping never stops early: an error is reported and the remaining
    services are still stopped.
    """

    def __init__(
        self,
        services: Sequence[Service],
        *,
        on_change: Callable[[], None] = lambda: None,
        budget: Callable[[], RestartBudget] = RestartBudget,
    ) -> None:
        self.services = list(services)
        self.on_change = on_change
        """Called whenever what runs where changed (a start, a restart): the state file."""
        self.started: list[Service] = []
        self.budgets: defaultdict[str, RestartBudget] = defaultdict(budget)

    def start(self) -> None:
        for service in self.services:
            self.started.append(service)  # before start: a signal must not orphan its processes
            service.start()
            self.on_change()

    def stop(self) -> None:
        while self.started:
            service = self.started.pop()
            if not service.children():
                continue
            print(f"stopping {service.name}", flush=True)
            try:
                service.stop()
            except Exception as exc:  # keep going: the remaining services must still stop
                print(f"error while stopping {service.name}: {exc}", file=sys.stderr, flush=True)

    def describe(self) -> list[ServiceRow]:
        """One row per process (or external server), in start order."""
        return [row for service in self.started for row in service.describe()]

    def restart_exited(self) -> None:
        """Restart any child that exited; give up (ClusterError) when it keeps crashing."""
        for service in self.started:
            for child in service.children():
                if child.is_running():
                    continue
                budget = self.budgets[child.name]
                if not budget.allow():
                    raise ClusterError(
                        f"{child.name} keeps exiting (restarted {budget.limit} times within "
                        f"{budget.window:g}s); giving up"
                    )
                print(
                    f"{child.name} exited unexpectedly{child.exit_detail()}\n"
                    f"restarting {child.name}",
                    file=sys.stderr,
                    flush=True,
                )
                child.restart()
                self.on_change()
