"""The dashboard's merge of worker snapshots: percentiles from summed buckets, instances up or
down, rates added across workers (cluster/relay/dashboard_data.py)."""

from __future__ import annotations

import pytest

from cluster.relay.dashboard_data import merge, merge_windows, quantile
from cluster.relay.dashboard_snapshot import TARGETS, Health, LatencyWindow, Snapshot

BOUNDS = [0.001, 0.005, 0.01, 0.05]


def window(counts: list[float], total: float) -> LatencyWindow:
    return LatencyWindow(BOUNDS, counts, total, 0.0)


def snapshot(instance: str, pid: int, *, accepted: float = 0.0, at: float = 100.0) -> Snapshot:
    latency = {name: window([0, 0, 0, 0], 0) for name in TARGETS}
    latency["acceptance"] = window([10, 90, 100, 100], 100)
    return Snapshot(
        instance=instance,
        pid=pid,
        at=at,
        started=0.0,
        connections=3,
        subscriptions=5,
        ok_total={"accepted": 10 * accepted, "invalid": 2},
        ok_rate={"accepted": accepted, "invalid": 0.5, "duplicate": 1.0},
        rates={"delivered": 4.0},
        latency=latency,
        health=Health(postgres="ok", redis="ok", ledger="off"),
        breaker=0.0,
        bus={"published": 1, "received": 2, "dropped": 0},
    )


@pytest.mark.parametrize(
    ("q", "counts", "total", "expected"),
    [
        (0.5, [0, 100, 100, 100], 100, 0.003),  # halfway through the (1 ms, 5 ms] bucket
        (0.95, [10, 90, 100, 100], 100, 0.0075),  # in (5 ms, 10 ms]
        (0.5, [100, 100, 100, 100], 100, 0.0005),  # first bucket interpolates from 0
        (0.99, [0, 0, 0, 10], 100, 0.05),  # past the last bound: the last bound
    ],
)
def test_quantile_interpolates_like_prometheus(
    q: float, counts: list[float], total: float, expected: float
) -> None:
    assert quantile(q, window(counts, total)) == pytest.approx(expected)


def test_quantile_without_observations_is_none() -> None:
    assert quantile(0.95, window([0, 0, 0, 0], 0)) is None


def test_windows_add_bucket_by_bucket() -> None:
    merged = merge_windows([window([1, 2, 3, 4], 5), window([0, 1, 1, 1], 1)])
    assert merged is not None and (merged.counts, merged.total) == ([1, 3, 4, 5], 6)


def test_merge_sums_workers_and_marks_a_silent_instance_down() -> None:
    live = {
        "a:1:10": snapshot("a:1", 10, accepted=2.0),
        "a:1:11": snapshot("a:1", 11, accepted=3.0),
    }
    seen = {"a:1:10": 100.0, "a:1:11": 100.0, "a:1:9": 50.0, "b:2:20": 80.0}
    view = merge(seen, live, now=101.0)
    instances = {i["id"]: i for i in view["instances"]}
    assert instances["a:1"]["up"] and [w["pid"] for w in instances["a:1"]["workers"]] == [10, 11]
    assert instances["a:1"]["accepted_rate"] == 5.0
    assert not instances["b:2"]["up"] and instances["b:2"]["last_seen"] == 80.0
    totals = view["totals"]
    assert (totals["instances_up"], totals["instances"], totals["workers"]) == (1, 2, 2)
    assert (totals["connections"], totals["subscriptions"]) == (6, 10)
    assert totals["accepted_rate"] == 5.0 and totals["refused_by_reason"] == {"invalid": 1.0}
    assert view["latency"]["acceptance"]["count"] == 200
    assert view["latency"]["acceptance"]["ok"] is True  # p95 7.5 ms < 10 ms
    assert view["latency"]["payment"]["p95"] is None and view["latency"]["payment"]["ok"] is None
    assert view["fanout"]["delivered_rate"] == 8.0 and view["fanout"]["received"] == 4
    assert view["health"] == {"postgres": "ok", "redis": "ok", "ledger": "off"}


def test_worst_health_wins() -> None:
    one, two = snapshot("a:1", 1), snapshot("a:1", 2)
    two.health = Health(postgres="down", redis="ok", ledger="degraded")
    view = merge({}, {"a:1:1": one, "a:1:2": two}, now=0.0)
    assert view["health"] == {"postgres": "down", "redis": "ok", "ledger": "degraded"}
