"""Sizes and durations of one bench run: the full run behind docs/PERFORMANCE.md, or --quick."""

from __future__ import annotations

import msgspec

SCENARIOS = (
    "fill",
    "accept",
    "sustained",
    "peak",
    "soak",
    "paid",
    "delivery",
    "broadcast",
    "query",
    "explain",
    "connections",
    "subscriptions",
    "sweep",
    "locust",
    "profile",
    "matching",
    "shapes",
    "abuse",
)
"""Names `--skip` accepts."""


class Plan(msgspec.Struct, kw_only=True):
    fill: int = 1_000_000
    accept_rate: float = 1000
    accept_duration: float = 60
    accept_connections: int = 50
    sustained_rate: float = 3000
    sustained_duration: float = 60
    peak_rate: float = 5000
    peak_duration: float = 30
    soak_rate: float = 2000
    soak_minutes: float = 10
    soak_window: float = 60
    paid_rate: float = 500
    paid_duration: float = 30
    paid_connections: int = 50
    delivery_rate: float = 200
    delivery_duration: float = 30
    delivery_subscribers: int = 1000
    delivery_fanout: int = 10
    broadcast_rate: float = 10
    broadcast_duration: float = 15
    query_rate: float = 10
    query_duration: float = 30
    query_connections: int = 10
    query_load_rate: float = 50
    query_load_duration: float = 20
    channels_per_connection: int = 10
    hold_connections: int = 10_000
    hold_subs: int = 1
    hold_seconds: float = 10
    sub_connections: int = 5_000
    subs_per_connection: int = 20
    live_rate: float = 200
    live_duration: float = 30
    live_subscribers: int = 100
    live_fanout: int = 10
    sweep_rates: list[float] = msgspec.field(
        default_factory=lambda: [100, 250, 500, 750, 1000, 1500, 2000, 3000, 5000]
    )
    sweep_duration: float = 10
    sweep_pause: float = 2.0
    warmup_seconds: float = 5.0
    locust_seconds: float = 20
    locust_free_users: int = 20
    locust_free_rate: float = 25
    locust_paid_users: int = 5
    locust_paid_rate: float = 10
    locust_query_users: int = 5
    locust_query_rate: float = 10
    profile_seconds: float = 20
    drain: float = 10
    shapes: list[str] = msgspec.field(default_factory=lambda: ["1x1", "2x1", "2x2"])
    shape_rates: list[float] = msgspec.field(default_factory=lambda: [1000, 2000])
    shape_duration: float = 15
    abuse_duration: float = 20
    abuse_attackers: int = 2
    abuse_fill: int = 20_000

    @classmethod
    def quick(cls) -> Plan:
        """A smoke run: a tiny fill and seconds per scenario (the tests use it)."""
        return cls(
            fill=2_000,
            accept_rate=100,
            accept_duration=2,
            accept_connections=4,
            sustained_rate=150,
            sustained_duration=1.5,
            peak_rate=200,
            peak_duration=1,
            soak_rate=100,
            soak_minutes=0.05,
            soak_window=1.5,
            paid_rate=50,
            paid_duration=1.5,
            paid_connections=4,
            delivery_rate=50,
            delivery_duration=1.5,
            delivery_subscribers=20,
            delivery_fanout=5,
            broadcast_rate=5,
            broadcast_duration=2,
            query_rate=20,
            query_duration=1.5,
            query_connections=4,
            query_load_rate=40,
            query_load_duration=1,
            channels_per_connection=2,
            hold_connections=50,
            hold_subs=1,
            hold_seconds=1,
            sub_connections=20,
            subs_per_connection=3,
            live_rate=20,
            live_duration=1.5,
            live_subscribers=10,
            live_fanout=5,
            sweep_rates=[50, 100],
            sweep_duration=1,
            sweep_pause=0.2,
            warmup_seconds=0.5,
            locust_seconds=4,
            locust_free_users=2,
            locust_free_rate=5,
            locust_paid_users=1,
            locust_paid_rate=5,
            locust_query_users=1,
            locust_query_rate=5,
            profile_seconds=0,
            drain=5,
            shapes=["1x1"],
            shape_rates=[50],
            shape_duration=1,
            abuse_duration=2,
            abuse_attackers=1,
            abuse_fill=500,
        )
