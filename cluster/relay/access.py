"""Who may do what on a connection: NIP-42 AUTH state, write and read access, rate limits.

The pure rules live in cluster/nostr (auth, pow, protected, dm_access); this module applies them
with what only the connection knows (its authenticated keys, its client address).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import cached_property

import msgspec

from cluster.config import Settings
from cluster.nostr.auth import auth_required, new_challenge
from cluster.nostr.dm_access import (
    DM_KINDS,
    filter_dms_all_readable,
    filter_may_match_dms,
    filter_needs_auth,
    may_read,
)
from cluster.nostr.event import Event, event_from_json
from cluster.nostr.filters import Filter
from cluster.nostr.pow import check_pow
from cluster.nostr.protected import check_protected, is_protected
from cluster.nostr.rejection import Rejection, blocked, rate_limited
from cluster.relay.addresses import subject_of_ip
from cluster.relay.ratelimit import RateLimiter

MINUTE = 60
INVALID_FREE = 10
"""Invalid EVENTs a connection may send before each further EVENT waits (it is slowed)."""
INVALID_STEP = 0.05
INVALID_MAX_WAIT = 1.0


class _KindOnly(msgspec.Struct):
    kind: int


_kind_decoder = msgspec.json.Decoder(_KindOnly)


@dataclass
class AccessState:
    """Per connection: the client's address, its AUTH challenge and authenticated keys."""

    client_ip: str
    exempt: bool
    rate_subject: str = ""
    challenge: str = field(default_factory=new_challenge)
    challenge_sent: bool = False
    authenticated: frozenset[str] = frozenset()
    invalid_strikes: int = 0  # EVENTs refused by verification or policy on this connection

    def authenticate(self, pubkey: str) -> None:
        self.authenticated = self.authenticated | {pubkey}


@dataclass
class AccessControl:
    """The worker's access rules, built once from the settings."""

    settings: Settings
    limiter: RateLimiter | None

    @cached_property
    def _exempt_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.settings.rate_limits.exempt]

    def is_exempt(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self._exempt_networks)

    def state_for(self, ip: str, *, forwarded: bool = False) -> AccessState:
        """A forwarded address (X-Forwarded-For) is never exempt: only a direct peer can be."""
        exempt = not forwarded and self.is_exempt(ip)
        return AccessState(client_ip=ip, exempt=exempt, rate_subject=subject_of_ip(ip))

    async def check_write(self, state: AccessState, event: Event) -> Rejection | None:
        """AUTH for writes, NIP-13 proof of work, NIP-70 protection, then rate limits."""
        if self.settings.auth.required_for_writes and not state.authenticated:
            return auth_required("this relay requires authentication (NIP-42) to publish")
        policy = self.settings.policy
        if policy.min_pow_difficulty:
            rejection = check_pow(event, policy.min_pow_difficulty)
            if rejection is not None:
                return rejection
        if is_protected(event):
            if not policy.accept_protected:
                return blocked("protected events (NIP-70) are not accepted here")
            rejection = check_protected(event, state.authenticated)
            if rejection is not None:
                return rejection
        return await self._limit_pubkey(state, event)

    async def admit_event(self, state: AccessState) -> Rejection | None:
        """Every EVENT counts against its address's budget, valid or not, before the costly
        checks: a flood of bad signatures pays like any other flood."""
        if self.limiter is None or state.exempt:
            return None
        limit = self.settings.rate_limits.events_per_minute_per_ip
        if not await self.limiter.allow("event-ip", state.rate_subject, limit, MINUTE):
            return rate_limited("too many events from your address, slow down")
        return None

    async def _limit_pubkey(self, state: AccessState, event: Event) -> Rejection | None:
        if self.limiter is None or state.exempt:
            return None
        limit = self.settings.rate_limits.events_per_minute_per_pubkey
        if not await self.limiter.allow("event-pubkey", event.pubkey, limit, MINUTE):
            return rate_limited("too many events from this pubkey, slow down")
        return None

    async def note_invalid(self, state: AccessState) -> bool:
        """An EVENT failed verification or policy. True: disconnect the client (its address
        sent more invalid EVENTs this minute than `rate_limits.invalid_events_per_minute_per_ip`
        allows, or this connection more than `rate_limits.invalid_events_per_connection`)."""
        if state.exempt:
            return False  # local tools and tests (rate_limits.exempt) are never limited
        state.invalid_strikes += 1
        limits = self.settings.rate_limits
        if limits.invalid_events_per_connection and (
            state.invalid_strikes > limits.invalid_events_per_connection
        ):
            return True
        if self.limiter is None:
            return False
        limit = limits.invalid_events_per_minute_per_ip
        return not await self.limiter.allow("invalid-ip", state.rate_subject, limit, MINUTE)

    def invalid_penalty(self, state: AccessState) -> float:
        """Seconds the next EVENT of this connection waits: nothing for the first INVALID_FREE
        invalid ones, then a little more for each (slowed before it is disconnected)."""
        over = state.invalid_strikes - INVALID_FREE
        return 0.0 if over <= 0 else min(INVALID_MAX_WAIT, over * INVALID_STEP)

    async def check_read(self, state: AccessState, filters: tuple[Filter, ...]) -> Rejection | None:
        """REQ/COUNT: DM kinds need AUTH when restricted; then the per-address REQ limit."""
        if (
            self.settings.auth.restrict_dm_reads
            and not state.authenticated
            and any(filter_needs_auth(flt) for flt in filters)
        ):
            return auth_required("direct messages are served only to their participants")
        if self.limiter is None or state.exempt:
            return None
        limit = self.settings.rate_limits.reqs_per_minute_per_ip
        if not await self.limiter.allow("req-ip", state.rate_subject, limit, MINUTE):
            return rate_limited("too many subscriptions from your address, slow down")
        return None

    def must_screen_dms(self, filters: tuple[Filter, ...]) -> bool:
        """Whether results of these filters could include DMs that need a per-event check."""
        return self.settings.auth.restrict_dm_reads and any(
            filter_may_match_dms(flt) for flt in filters
        )

    def count_hidden_kinds(
        self, state: AccessState, filters: tuple[Filter, ...]
    ) -> list[frozenset[int]]:
        """Per filter, the DM kinds a COUNT must leave out: screened like a REQ's results,
        where COUNT cannot look at events one by one."""
        if not self.settings.auth.restrict_dm_reads:
            return [frozenset()] * len(filters)
        return [
            frozenset() if filter_dms_all_readable(flt, state.authenticated) else DM_KINDS
            for flt in filters
        ]

    def may_see_stored(self, state: AccessState, row: bytes) -> bool:
        """`may_see` for stored JSON: only the kind is read unless it is a DM kind."""
        if _kind_decoder.decode(row).kind not in DM_KINDS:
            return True
        return self.may_see(state, event_from_json(row))

    def may_see(self, state: AccessState, event: Event) -> bool:
        if not self.settings.auth.restrict_dm_reads or event.kind not in DM_KINDS:
            return True
        return may_read(event, state.authenticated)
