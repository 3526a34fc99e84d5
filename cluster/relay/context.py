"""Everything one worker shares between its connections, built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field

from cluster.bus.fanout import FanoutBus
from cluster.config import Settings
from cluster.nostr.filters import FilterLimits
from cluster.nostr.messages import MessageLimits
from cluster.relay.policies import Policy, default_policies
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
    policies: list[Policy] = field(default_factory=list)
    stats: RelayStats = field(default_factory=RelayStats)
    shutting_down: bool = False

    @classmethod
    def build(
        cls,
        settings: Settings,
        store: EventStore,
        writer: EventWriter,
        bus: FanoutBus,
        index: SubscriptionIndex,
    ) -> RelayContext:
        return cls(
            settings=settings,
            store=store,
            writer=writer,
            bus=bus,
            index=index,
            limits=message_limits(settings),
            policies=default_policies(settings.limits),
        )
