"""The service list of `up`, with fake services: start order, reverse stop, half-way failures,
restarts within a budget. No processes."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from cluster.services.supervision import (
    ClusterError,
    RestartBudget,
    ServiceList,
    ServiceRow,
    Supervised,
)


@dataclass
class FakeChild:
    name: str
    running: bool = True
    restarts: int = 0

    def is_running(self) -> bool:
        return self.running

    def restart(self) -> None:
        self.restarts += 1
        self.running = True

    def exit_detail(self) -> str:
        return " with code 3"


@dataclass
class FakeService:
    name: str
    journal: list[str]
    fail_start: bool = False
    fail_stop: bool = False
    external: bool = False
    kids: list[FakeChild] = field(default_factory=list)

    def start(self) -> None:
        self.journal.append(f"start {self.name}")
        if not self.external:
            self.kids.append(FakeChild(self.name))  # launched before it could fail
        if self.fail_start:
            raise ClusterError(f"{self.name} did not start")

    def stop(self) -> None:
        self.journal.append(f"stop {self.name}")
        if self.fail_stop:
            raise RuntimeError(f"{self.name} refused to stop")

    def describe(self) -> list[ServiceRow]:
        return [ServiceRow(self.name, 1 if self.kids else None, f"tcp://{self.name}", "-")]

    def children(self) -> list[Supervised]:
        return list(self.kids)


def services(journal: list[str], *names: str) -> list[FakeService]:
    return [FakeService(name, journal) for name in names]


def test_starts_in_order_and_stops_in_reverse() -> None:
    journal: list[str] = []
    changes: list[list[str]] = []
    listed = ServiceList(services(journal, "postgres", "redis", "nginx"))
    listed.on_change = lambda: changes.append([row.name for row in listed.describe()])

    listed.start()
    listed.stop()

    assert journal == [
        "start postgres",
        "start redis",
        "start nginx",
        "stop nginx",
        "stop redis",
        "stop postgres",
    ]
    # The state file is rewritten after each start, naming what runs so far.
    assert changes == [["postgres"], ["postgres", "redis"], ["postgres", "redis", "nginx"]]
    assert listed.describe() == []  # stopped services are no longer described


def test_a_start_failing_half_way_stops_it_and_those_before_it_only() -> None:
    journal: list[str] = []
    postgres, redis, ledger, nginx = services(journal, "postgres", "redis", "ledger", "nginx")
    ledger.fail_start = True
    listed = ServiceList([postgres, redis, ledger, nginx])

    with pytest.raises(ClusterError, match="ledger did not start"):
        listed.start()
    listed.stop()

    assert journal == [
        "start postgres",
        "start redis",
        "start ledger",
        "stop ledger",  # it may have launched processes before failing
        "stop redis",
        "stop postgres",
    ]


def test_an_interrupted_start_is_stopped_as_well() -> None:
    journal: list[str] = []
    first, second = services(journal, "instances", "nginx")

    def interrupted() -> None:
        first.kids.append(FakeChild("instance-1"))
        raise KeyboardInterrupt  # what a signal handler raises in the middle of a start

    first.start = interrupted  # type: ignore[method-assign]
    listed = ServiceList([first, second])
    with pytest.raises(KeyboardInterrupt):
        listed.start()
    listed.stop()

    assert journal == ["stop instances"]


def test_external_services_are_described_but_never_stopped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    journal: list[str] = []
    external, local = services(journal, "postgres", "redis")
    external.external = True
    listed = ServiceList([external, local])
    listed.start()
    assert [row.name for row in listed.describe()] == ["postgres", "redis"]

    listed.stop()

    assert journal == ["start postgres", "start redis", "stop redis"]
    assert capsys.readouterr().out == "stopping redis\n"


def test_stopping_goes_on_after_a_service_fails_to_stop(
    capsys: pytest.CaptureFixture[str],
) -> None:
    journal: list[str] = []
    postgres, redis, nginx = services(journal, "postgres", "redis", "nginx")
    redis.fail_stop = True
    listed = ServiceList([postgres, redis, nginx])
    listed.start()

    listed.stop()

    assert journal[-3:] == ["stop nginx", "stop redis", "stop postgres"]
    assert "error while stopping redis: redis refused to stop" in capsys.readouterr().err


def test_an_exited_child_is_restarted_and_the_state_rewritten(
    capsys: pytest.CaptureFixture[str],
) -> None:
    journal: list[str] = []
    changes: list[str] = []
    postgres, redis = services(journal, "postgres", "redis")
    listed = ServiceList([postgres, redis], on_change=lambda: changes.append("state"))
    listed.start()
    changes.clear()
    redis.kids[0].running = False

    listed.restart_exited()

    assert redis.kids[0].restarts == 1 and postgres.kids[0].restarts == 0
    assert changes == ["state"]
    assert "redis exited unexpectedly with code 3\nrestarting redis" in capsys.readouterr().err


def test_a_child_that_keeps_exiting_exhausts_its_budget() -> None:
    now = [0.0]
    journal: list[str] = []
    (redis,) = services(journal, "redis")
    listed = ServiceList(
        [redis], budget=lambda: RestartBudget(limit=2, window=60.0, clock=lambda: now[0])
    )
    listed.start()
    for _ in range(2):
        redis.kids[0].running = False
        listed.restart_exited()
        now[0] += 1.0

    redis.kids[0].running = False
    with pytest.raises(ClusterError, match=r"redis keeps exiting \(restarted 2 times within 60s\)"):
        listed.restart_exited()


def test_restart_budget_forgets_restarts_older_than_its_window() -> None:
    now = [100.0]
    budget = RestartBudget(limit=2, window=10.0, clock=lambda: now[0])
    assert budget.allow() and budget.allow()
    assert not budget.allow()
    now[0] += 10.5
    assert budget.allow()
