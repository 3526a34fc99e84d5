"""Per-address budgets in one worker: what one client address may cost it, across all of its
connections, whatever kind of message it sends.

The per-kind limits (cluster/relay/access.py: EVENTs, REQs, connections, invalid events) count
messages cluster-wide through Redis; these price them, locally and without a round trip:

- messages: every message read costs 1 + one unit per whole 4 KiB, refused or not. An
  address past `rate_limits.messages_per_second_per_ip` is simply not read for a while: its
  connections' read loops wait, TCP backpressure stops the client, and no CPU is spent on
  what it sends meanwhile (a flood of refusals or of huge filters costs what its budget allows).
- queries: a REQ or COUNT costs its estimated rows (cluster/nostr/filter_cost.py), a NIP-77
  NEG-OPEN the items it read, against `rate_limits.query_cost_per_minute_per_ip`; past it they
  are refused `rate-limited:`.
- subscriptions: at most `limits.max_subscriptions_per_address` open subscriptions and
  `limits.max_wide_filters_per_address` filters that no id, author or tag narrows (every
  incoming event is matched against those), so one address cannot make matching every event
  expensive by opening many connections.

Budgets are per worker: nginx keeps an address on one instance (ip_hash), so an address meets
at most the workers of one instance. Exempt addresses (rate_limits.exempt) have no budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from cluster.config import Settings
from cluster.nostr.filter_cost import count_cost, req_cost, wide_filters
from cluster.nostr.filters import Filter
from cluster.nostr.rejection import Rejection, blocked, rate_limited
from cluster.relay.access import AccessState
from cluster.relay.local_limits import TokenBuckets

MESSAGE_UNIT_BYTES = 4096
MESSAGE_BURST_SECONDS = 2.0
"""A message budget holds this many seconds' worth of messages: short bursts pass at once."""
MINUTE = 60.0


def message_cost(size: int) -> float:
    """1 for any message, plus one per whole MESSAGE_UNIT_BYTES: parsing grows with size."""
    return 1.0 + size // MESSAGE_UNIT_BYTES


class _Open:
    """An address's open subscriptions and wide filters in this worker."""

    __slots__ = ("subscriptions", "wide")

    def __init__(self) -> None:
        self.subscriptions = 0
        self.wide = 0


class AddressBudgets:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self._rates = settings.rate_limits
        self._limits = settings.limits
        self._clock = clock
        self._messages = TokenBuckets()
        self._queries = TokenBuckets()
        self._open: dict[str, _Open] = {}

    # ---- messages ---------------------------------------------------------------------------

    def message_wait(self, state: AccessState, size: int) -> float:
        """Seconds the read loop waits before it handles this message (0.0: at once)."""
        rate = self._rates.messages_per_second_per_ip
        if not rate or state.exempt:
            return 0.0
        capacity = rate * MESSAGE_BURST_SECONDS
        return self._messages.seconds_until(
            state.rate_subject, capacity, MESSAGE_BURST_SECONDS, self._clock(), message_cost(size)
        )

    # ---- queries ----------------------------------------------------------------------------

    def refuse_req(self, state: AccessState, filters: Iterable[Filter]) -> Rejection | None:
        return self._charge_query(state, req_cost(filters))

    def refuse_count(self, state: AccessState, filters: Iterable[Filter]) -> Rejection | None:
        return self._charge_query(state, count_cost(filters))

    def refuse_reconciliation(self, state: AccessState) -> Rejection | None:
        """NIP-77 reads every matching item, a number known only afterwards: a NEG-OPEN is
        admitted while the address's query budget is not spent, then pays what it read
        (`charge_items`), into debt if need be."""
        return self._charge_query(state, 1)

    def charge_items(self, state: AccessState, items: int) -> None:
        budget = self._rates.query_cost_per_minute_per_ip
        if budget and not state.exempt:
            self._queries.spend(state.rate_subject, budget, MINUTE, self._clock(), items)

    def _charge_query(self, state: AccessState, cost: int) -> Rejection | None:
        budget = self._rates.query_cost_per_minute_per_ip
        if not budget or state.exempt:
            return None
        if cost > budget:
            return blocked(f"query too expensive (estimated {cost} rows, at most {budget})")
        if not self._queries.take(state.rate_subject, budget, MINUTE, self._clock(), cost):
            return rate_limited("query budget of your address used up, retry in a minute")
        return None

    # ---- subscriptions ----------------------------------------------------------------------

    def refuse_subscription(
        self, state: AccessState, filters: tuple[Filter, ...]
    ) -> Rejection | None:
        """Whether one more subscription with these filters would exceed the address's share."""
        if state.exempt:
            return None
        open_ = self._open.get(state.rate_subject)
        if open_ is None:
            open_ = _Open()
        limits = self._limits
        most = limits.max_subscriptions_per_address
        if most and open_.subscriptions >= most:
            return blocked(f"too many open subscriptions from your address (max {most})")
        wide = limits.max_wide_filters_per_address
        if wide and open_.wide + wide_filters(filters) > wide:
            return blocked(
                "too many subscriptions without ids, authors or tags from your address"
                f" (max {wide} such filters)"
            )
        return None

    def subscribed(self, state: AccessState, filters: tuple[Filter, ...]) -> None:
        if state.exempt:
            return
        open_ = self._open.setdefault(state.rate_subject, _Open())
        open_.subscriptions += 1
        open_.wide += wide_filters(filters)

    def unsubscribed(self, state: AccessState, filters: tuple[Filter, ...]) -> None:
        if state.exempt:
            return
        open_ = self._open.get(state.rate_subject)
        if open_ is None:
            return
        open_.subscriptions -= 1
        open_.wide -= wide_filters(filters)
        if open_.subscriptions <= 0:
            del self._open[state.rate_subject]  # bounded by the open subscriptions

    def open_subscriptions(self, state: AccessState) -> int:
        open_ = self._open.get(state.rate_subject)
        return 0 if open_ is None else open_.subscriptions
