"""The dashboard's figures: every live worker's snapshot merged into one view (pure functions).

Rates and latency windows add up across workers: the cluster's events/s is the sum of its
workers' rates, and a percentile is taken from the summed bucket counts (the way Prometheus'
histogram_quantile aggregates), never by averaging per-worker percentiles.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cluster.relay.dashboard_snapshot import TARGETS, LatencyWindow, Snapshot

ANSWERED = ("accepted", "duplicate")
"""OK prefixes that are not refusals: the event is stored (now or before)."""


def quantile(q: float, window: LatencyWindow) -> float | None:
    """Prometheus-style linear interpolation inside the bucket holding the q-th observation;
    None without observations, the highest bound when it falls past the last bucket."""
    if window.total <= 0 or not window.bounds:
        return None
    rank = q * window.total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(window.bounds, window.counts, strict=True):
        if count >= rank:
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def merge_windows(windows: list[LatencyWindow]) -> LatencyWindow | None:
    """Bucket-wise sum of windows with the same bounds (every worker runs the same code)."""
    if not windows:
        return None
    first = windows[0]
    counts = [0.0] * len(first.counts)
    total = seconds = 0.0
    for window in windows:
        if window.bounds != first.bounds:
            continue
        counts = [a + b for a, b in zip(counts, window.counts, strict=True)]
        total += window.total
        seconds += window.sum
    return LatencyWindow(first.bounds, counts, total, seconds)


def latency_view(snapshots: list[Snapshot]) -> dict[str, dict[str, Any]]:
    view: dict[str, dict[str, Any]] = {}
    for name, (_, limit) in TARGETS.items():
        merged = merge_windows([s.latency[name] for s in snapshots if name in s.latency])
        p95 = quantile(0.95, merged) if merged else None
        view[name] = {
            "p50": quantile(0.50, merged) if merged else None,
            "p95": p95,
            "p99": quantile(0.99, merged) if merged else None,
            "count": merged.total if merged else 0,
            "limit": limit,
            "ok": None if p95 is None else p95 < limit,
        }
    return view


def _add(into: dict[str, float], values: Mapping[str, float]) -> None:
    for key, value in values.items():
        into[key] = into.get(key, 0.0) + value


def _worst(states: list[str]) -> str:
    for state in ("down", "degraded", "ok", "off"):
        if state in states:
            return state
    return "unknown"


def merge(
    seen: Mapping[str, float],
    snapshots: Mapping[str, Snapshot],
    now: float,
) -> dict[str, Any]:
    """The cluster view: per instance (up while any worker's snapshot is alive), totals,
    latency percentiles against their targets, fan-out figures and health.

    `seen` is the registry (worker -> last seen); a dead worker of an instance that still has
    live workers was replaced by gunicorn and is left out, a wholly dead instance is shown down.
    """
    by_instance: dict[str, list[Snapshot]] = {}
    last_seen: dict[str, float] = {}
    for worker, at in seen.items():
        instance = worker.rsplit(":", 1)[0]
        last_seen[instance] = max(last_seen.get(instance, 0.0), at)
        by_instance.setdefault(instance, [])
    for snapshot in snapshots.values():
        by_instance.setdefault(snapshot.instance, []).append(snapshot)
        last_seen[snapshot.instance] = max(last_seen.get(snapshot.instance, 0.0), snapshot.at)
    instances = []
    for instance in sorted(by_instance):
        live = sorted(by_instance[instance], key=lambda s: s.pid)
        instance_rate: dict[str, float] = {}
        for snapshot in live:
            _add(instance_rate, snapshot.ok_rate)
        instances.append(
            {
                "id": instance,
                "up": bool(live),
                "last_seen": last_seen.get(instance),
                "workers": [
                    {
                        "pid": s.pid,
                        "connections": s.connections,
                        "subscriptions": s.subscriptions,
                        "started": s.started,
                    }
                    for s in live
                ],
                "connections": sum(s.connections for s in live),
                "subscriptions": sum(s.subscriptions for s in live),
                "accepted_rate": instance_rate.get("accepted", 0.0),
                "health": {
                    part: _worst([getattr(s.health, part) for s in live])
                    for part in ("postgres", "redis", "ledger")
                }
                if live
                else None,
            }
        )
    alive = list(snapshots.values())
    ok_total: dict[str, float] = {}
    ok_rate: dict[str, float] = {}
    rates: dict[str, float] = {}
    bus = {"published": 0, "received": 0, "dropped": 0}
    for snapshot in alive:
        _add(ok_total, snapshot.ok_total)
        _add(ok_rate, snapshot.ok_rate)
        _add(rates, snapshot.rates)
        for key in bus:
            bus[key] += snapshot.bus.get(key, 0)
    refused = {k: v for k, v in ok_rate.items() if k not in ANSWERED}
    latency = latency_view(alive)
    return {
        "now": now,
        "instances": instances,
        "totals": {
            "instances_up": sum(1 for i in instances if i["up"]),
            "instances": len(instances),
            "workers": len(alive),
            "connections": sum(s.connections for s in alive),
            "subscriptions": sum(s.subscriptions for s in alive),
            "ok_total": ok_total,
            "ok_rate": ok_rate,
            "accepted_total": ok_total.get("accepted", 0.0),
            "accepted_rate": ok_rate.get("accepted", 0.0),
            "refused_rate": sum(refused.values()),
            "refused_by_reason": refused,
            "rates": rates,
        },
        "latency": latency,
        "fanout": {
            "lag_p95": latency["delivery"]["p95"],
            "lag_p50": latency["delivery"]["p50"],
            "delivered_rate": rates.get("delivered", 0.0),
            **bus,
        },
        "health": {
            part: _worst([getattr(s.health, part) for s in alive])
            for part in ("postgres", "redis", "ledger")
        },
        "breaker": max((s.breaker for s in alive), default=0.0),
    }
