"""What the figures mean: the report's notes and memory-per-1,000 figures (pure)."""

from __future__ import annotations

from loadtest.cells import triple
from loadtest.plan import Plan
from loadtest.record import BenchResults
from loadtest.results import HoldResult, RssPer1000, TreeRss


def _relay(snap: dict[str, TreeRss]) -> float:
    return sum(v.rss_mib for k, v in snap.items() if k.startswith("instance-"))


def _nginx(snap: dict[str, TreeRss]) -> float:
    return snap["nginx"].rss_mib if "nginx" in snap else 0.0


def rss_per_thousand(hold: HoldResult) -> RssPer1000 | None:
    """Memory growth per 1,000 connections and per 1,000 subscriptions, from the phases."""
    memory = hold.memory
    if not memory.baseline:
        return None
    thousands = max(1e-9, hold.opened / 1000)
    base, connected, subscribed = memory.baseline, memory.connected, memory.subscribed
    return RssPer1000(
        relay_connections_mib=round((_relay(connected) - _relay(base)) / thousands, 2),
        relay_subscriptions_mib=round((_relay(subscribed) - _relay(connected)) / thousands, 2),
        nginx_mib=round((_nginx(connected) - _nginx(base)) / thousands, 2),
        relay_per_1000_subscriptions_mib=round(
            (_relay(subscribed) - _relay(connected)) / max(1e-9, hold.subscriptions / 1000), 2
        ),
    )


def plan_notes(results: BenchResults) -> list[str]:
    before, after = results.explain or {}, results.explain_after or {}
    slower = [
        f"{shape} ({b.execution_ms_median:.1f} → {a.execution_ms_median:.0f} ms, "
        f"{a.rows_removed_max:,} rows read and filtered out)"
        for shape, b in before.items()
        if (a := after.get(shape)) and a.execution_ms_median > max(50.0, 10 * b.execution_ms_median)
    ]
    if not slower:
        return []
    return [
        "Query plans after the publishing scenarios: "
        + "; ".join(slower)
        + ". These plans walk `events_created_at_idx` newest first and filter, so a filter "
        "whose matches are not among the newest events (authors, a kind or a tag that the "
        "load test's recent events do not carry) reads every newer row before its LIMIT "
        "is met. The per-author/per-kind/tag indexes are not chosen for these shapes."
    ]


def cache_notes(results: BenchResults, plan: Plan) -> list[str]:
    notes = []
    warmed = results.prewarm
    if warmed is not None and warmed.blocks:
        notes.append(
            f"After the fill, PostgreSQL's buffer cache was pre-warmed with pg_prewarm "
            f"({warmed.blocks:,} blocks: the `events` table, then its indexes and the tag "
            f"index, {warmed.seconds:g} s): a bulk COPY leaves the cache nearly empty, and a "
            "relay that has served reads for a while has its working set cached. Cold first reads "
            "cost 5-10 ms per query here (docs/PERFORMANCE-LOG.md); `relay-cluster up` keeps "
            "the cache warm across restarts with pg_prewarm's autoprewarm."
        )
    elif warmed is not None and warmed.error:
        notes.append(f"The buffer cache was not pre-warmed ({warmed.error}).")
    warm = results.query_warmup.latency_ms if results.query_warmup else None
    if warm is not None:
        notes.append(
            "Queries: the measured phases follow an unreported warm-up of "
            f"{plan.warmup_seconds:g} s at {plan.query_rate * 2:g} q/s on other values "
            "(fresh workers have cold code paths, no prepared statements and new database "
            f"sessions); that warm-up itself measured {triple(warm)} ms (p50 / p95 / p99)."
        )
    return notes


def interpretation_notes(results: BenchResults, plan: Plan) -> list[str]:
    notes = [*plan_notes(results), *cache_notes(results, plan)]
    if results.accept is not None or results.sweep is not None:
        notes.append(
            "Publishing: the generator's send loop wakes at most once per millisecond and sends "
            "every event due by then (loadtest/schedule.py); each event's latency still runs "
            "from its own scheduled time, so a send up to a millisecond late counts against "
            "the relay, never for it."
        )
    if results.delivery is not None:
        notes.append(
            f"Delivery: {plan.delivery_subscribers:,} subscribers in groups of "
            f"{plan.delivery_fanout}; each event carries one group's `t` tag, so every event "
            f"reaches {plan.delivery_fanout} subscribers ({plan.delivery_rate:g} ev/s → "
            f"{plan.delivery_rate * plan.delivery_fanout:,.0f} deliveries/s), subscribers spread "
            "over both instances so most deliveries cross Redis. The broadcast row sends every "
            "event to all subscribers instead (the worst case for fan-out)."
        )
    if results.subscriptions is not None:
        notes.append(
            f"100,000 subscriptions = {plan.sub_connections:,} connections x "
            f"{plan.subs_per_connection} (the relay's default per-connection maximum), so "
            "the measuring subscribers still fit under nginx's connection limit. "
            "Held subscriptions are realistic shapes (follow lists of 1-20 authors, `#p` "
            "mentions, `#e` threads, rare kinds) on keys the live events never carry: each "
            "event is matched against the whole index but delivered only to the measuring "
            "subscribers."
        )
    if results.paid is not None:
        notes.append(
            f"Paid events: {plan.channels_per_connection} channels per publishing connection, "
            "used in rotation (claim nonces must rise per channel, and the relay handles one "
            "socket's EVENTs concurrently, so back-to-back claims of one channel could "
            "overtake each other), claims signed with `cluster.payments.claims.payment_tag` "
            "ahead of time. Before the clock starts, one paid event per channel puts every "
            "channel state in the relay's cache (steady state; the cold lookups are in the "
            "raw results under paid.warmup). A `stale_nonce` refusal means two claims of one "
            "channel were committed out of order."
        )
    f = results.fill
    if f is not None and f.reused:
        notes.append("The stored events were reused from an earlier fill of this data dir.")
    elif f is not None:
        notes.append(
            f"Fill: {f.count:,} events signed (BIP-340, coincurve) and COPYed with the "
            f"columns `event_row` computes, {f.rate:,} events/s, then "
            f"VACUUM ANALYZE; {f.fill_s:g} s in total. Kinds: {f.kinds}."
        )
    return notes
