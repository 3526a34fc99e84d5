"""Everything one worker shares between its connections, built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from cluster.bus.fanout import FanoutBus
from cluster.config import Settings
from cluster.nostr.filters import FilterLimits
from cluster.nostr.messages import MessageLimits
from cluster.nostr.nip11 import information_document
from cluster.payments.gate import PaymentGate
from cluster.payments.outbox import OutboxForwarder
from cluster.payments.pricing import PriceTable, Pricing
from cluster.relay.access import AccessControl
from cluster.relay.admission import QueryAdmission
from cluster.relay.budgets import AddressBudgets
from cluster.relay.moderation import Moderation
from cluster.relay.policies import Policy
from cluster.relay.ratelimit import ConnectionCounter
from cluster.relay.stats import RelayStats
from cluster.relay.subscriptions import SubscriptionIndex
from cluster.store.events import EventStore
from cluster.store.writer import EventWriter


def message_limits(settings: Settings) -> MessageLimits:
    limits = settings.limits
    return MessageLimits(
        max_message_bytes=limits.max_message_bytes,
        max_filters=limits.max_filters,
        max_subid_length=limits.max_subid_length,
        filters=FilterLimits(
            max_limit=limits.max_limit,
            default_limit=limits.default_limit,
            max_values=limits.max_filter_values,
            search=settings.search.enabled,
        ),
    )


@dataclass
class RelayContext:
    settings: Settings
    store: EventStore
    writer: EventWriter
    bus: FanoutBus
    index: SubscriptionIndex
    limits: MessageLimits
    pricing: Pricing
    access: AccessControl
    admission: QueryAdmission
    """Slots for store queries (REQ, COUNT), fair across client addresses."""
    budgets: AddressBudgets
    """What each client address may cost this worker: messages, query rows, subscriptions."""
    connection_counter: ConnectionCounter | None = None
    payments: PaymentGate | None = None
    outbox: OutboxForwarder | None = None
    policies: list[Policy] = field(default_factory=list)
    moderation: Moderation = field(default_factory=Moderation)
    """The operator's NIP-86 decisions (cluster/relay/moderation.py), kept current cluster-wide."""
    stats: RelayStats = field(default_factory=RelayStats)
    shutting_down: bool = False
    _nip11: tuple[PriceTable, object, bytes] | None = None

    @property
    def reads_on_replicas(self) -> bool:
        """Whether reads may go to replicas, so a connection's writes must be tracked for its
        reads (cluster/relay/freshness.py); without replicas that bookkeeping is skipped."""
        return bool(self.store.reads.replicas)

    def nip11_document(self) -> bytes:
        """NIP-11 is static except for prices and the operator's NIP-86 changes (name,
        description, icon); rebuilt only when the price table or the moderation state changed."""
        table, state = self.pricing.table, self.moderation.state
        if self._nip11 is None or self._nip11[0] is not table or self._nip11[1] is not state:
            fees = table.publication_fees() if table.requires_payment else None
            document = self.moderation.apply_info(information_document(self.settings, fees))
            self._nip11 = (table, state, orjson.dumps(document))
        return self._nip11[2]
