"""Per-address budgets: messages wait, queries are refused, subscriptions are shared."""

from __future__ import annotations

import msgspec

from cluster.config import Settings
from cluster.nostr.filters import Filter, FilterLimits, parse_filter
from cluster.relay.access import AccessControl, AccessState
from cluster.relay.budgets import AddressBudgets, message_cost


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def setup(**rates: int) -> tuple[AddressBudgets, Clock, AccessControl]:
    base = Settings()
    settings = msgspec.structs.replace(
        base,
        rate_limits=msgspec.structs.replace(base.rate_limits, exempt=["10.9.0.0/16"], **rates),
        limits=msgspec.structs.replace(
            base.limits, max_subscriptions_per_address=3, max_wide_filters_per_address=2
        ),
    )
    clock = Clock()
    return AddressBudgets(settings, clock), clock, AccessControl(settings, None)


def state(access: AccessControl, ip: str) -> AccessState:
    return access.state_for(ip)


def filters(*objs: dict[str, object]) -> tuple[Filter, ...]:
    return tuple(parse_filter(obj, FilterLimits()) for obj in objs)


def test_message_cost_grows_with_size() -> None:
    assert message_cost(10) == 1 and message_cost(4095) == 1
    assert message_cost(4096) == 2 and message_cost(131072) == 33


def test_messages_wait_once_the_burst_is_spent_and_refill_at_the_rate() -> None:
    budgets, clock, access = setup(messages_per_second_per_ip=10)
    client = state(access, "203.0.113.5")
    waits = [budgets.message_wait(client, 100) for _ in range(21)]
    assert waits[:20] == [0.0] * 20  # two seconds' worth at once
    assert abs(waits[20] - 0.1) < 1e-9  # then one every 1/rate seconds
    clock.now += 0.1
    assert budgets.message_wait(client, 100) == 0.0
    assert budgets.message_wait(state(access, "203.0.113.6"), 100) == 0.0  # another address
    huge = budgets.message_wait(client, 1 << 20)  # above the capacity: waits for a full bucket
    assert abs(huge - 2.0) < 1e-9


def test_exempt_and_disabled_budgets_never_wait() -> None:
    budgets, _, access = setup(messages_per_second_per_ip=1, query_cost_per_minute_per_ip=1)
    local = state(access, "10.9.1.1")
    assert all(budgets.message_wait(local, 10) == 0.0 for _ in range(100))
    assert budgets.refuse_req(local, filters({})) is None
    off, _, access = setup(messages_per_second_per_ip=0, query_cost_per_minute_per_ip=0)
    client = state(access, "203.0.113.5")
    assert all(off.message_wait(client, 10) == 0.0 for _ in range(100))
    assert all(off.refuse_req(client, filters({"limit": 5000})) is None for _ in range(100))


def test_queries_draw_on_one_budget_per_address() -> None:
    budgets, clock, access = setup(query_cost_per_minute_per_ip=5000)
    client = state(access, "203.0.113.5")
    feed = filters({"kinds": [1], "limit": 500})  # 2,200 rows
    assert budgets.refuse_req(client, feed) is None
    assert budgets.refuse_req(client, feed) is None
    refused = budgets.refuse_req(client, feed)
    assert refused is not None and refused.text.startswith("rate-limited: query budget")
    clock.now += 30  # half a minute refills 2,500
    assert budgets.refuse_req(client, feed) is None
    too_big = budgets.refuse_count(client, filters({"#p": ["ab" * 32, "cd" * 32, "ef" * 32]}))
    assert too_big is not None and too_big.text.startswith("blocked: query too expensive")


def test_subscriptions_and_wide_filters_are_counted_per_address() -> None:
    budgets, _, access = setup()
    first, second = state(access, "203.0.113.5"), state(access, "203.0.113.5")
    wide = filters({"kinds": [1]})
    narrow = filters({"authors": ["ab" * 32]})
    assert budgets.refuse_subscription(first, wide) is None
    budgets.subscribed(first, wide)
    budgets.subscribed(second, wide)
    refused = budgets.refuse_subscription(second, wide)
    assert refused is not None and "without ids, authors or tags" in refused.text
    assert budgets.refuse_subscription(second, narrow) is None
    budgets.subscribed(second, narrow)
    full = budgets.refuse_subscription(first, narrow)
    assert full is not None and "too many open subscriptions from your address" in full.text
    assert budgets.refuse_subscription(state(access, "203.0.113.9"), wide) is None
    budgets.unsubscribed(first, wide)
    assert budgets.open_subscriptions(first) == 2
    assert budgets.refuse_subscription(first, wide) is None
    budgets.unsubscribed(second, wide)
    budgets.unsubscribed(second, narrow)
    assert budgets.open_subscriptions(first) == 0  # the entry is gone with the last one


def test_reconciliations_pay_what_they_read_and_wait_out_a_debt() -> None:
    budgets, clock, access = setup(query_cost_per_minute_per_ip=6000)
    client = state(access, "203.0.113.5")
    assert budgets.refuse_reconciliation(client) is None
    budgets.charge_items(client, 12_000)  # twice the budget: a debt of about 6,000
    refused = budgets.refuse_reconciliation(client)
    assert refused is not None and refused.text.startswith("rate-limited:")
    assert budgets.refuse_req(client, filters({"ids": ["ab" * 32]})) is not None
    clock.now += 61  # the refill pays the debt back
    assert budgets.refuse_reconciliation(client) is None
