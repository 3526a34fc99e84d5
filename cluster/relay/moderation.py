"""The worker's copy of the operator's NIP-86 decisions, and the checks that apply them.

The EVENT pipeline calls `refuse(event)` once per event (stage 4, cluster/relay/verbs/event.py)
and the WebSocket entry calls `blocks_ip(ip)` once per upgrade: dictionary and set lookups on
the current `ModerationState`, never I/O. The state is replaced whole (never mutated) by
`reload`, which the invalidation listener runs when any worker of any instance announces a
change, on every (re)subscribe, and every RELOAD_INTERVAL seconds as a safety net.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from psycopg_pool import AsyncConnectionPool

from cluster.nostr.event import Event
from cluster.nostr.rejection import Rejection, blocked, restricted
from cluster.store.moderation import INFO_FIELDS, ModerationState, load_moderation

log = logging.getLogger(__name__)

RELOAD_INTERVAL = 30.0
"""Seconds between reloads without any announcement (a lost pub/sub message costs at most this)."""

BANNED_EVENT = blocked("this event is banned by the relay operator")
BANNED_PUBKEY = blocked("this pubkey is banned by the relay operator")
NOT_ALLOWED_PUBKEY = restricted("this relay accepts events only from pubkeys its operator allowed")

BlockedIpsChanged = Callable[[Mapping[str, str]], None]
Load = Callable[[], Awaitable[ModerationState]]


class Moderation:
    """Current decisions plus the checks; `reload` swaps in a fresh state from PostgreSQL."""

    def __init__(self, pool: AsyncConnectionPool[Any] | None = None) -> None:
        self.pool = pool
        self.state = ModerationState()
        self.on_blocked_ips: list[BlockedIpsChanged] = []
        """Called with the new blocked addresses whenever that list changed (closes sockets)."""
        self.loaded = False
        self._reloading = asyncio.Lock()

    def refuse(self, event: Event) -> Rejection | None:
        """Why the operator's decisions refuse `event`, or None (set lookups only)."""
        state = self.state
        if event.id in state.banned_events:
            return BANNED_EVENT
        if event.pubkey in state.banned_pubkeys:
            return BANNED_PUBKEY
        if state.allowed_pubkeys and event.pubkey not in state.allowed_pubkeys:
            return NOT_ALLOWED_PUBKEY
        if state.allowed_kinds and event.kind not in state.allowed_kinds:
            return restricted(f"this relay does not accept kind {event.kind}")
        return None

    def blocks_ip(self, ip: str) -> bool:
        """True when new connections from `ip` (as `client_address` derives it) are refused."""
        return ip in self.state.blocked_ips

    def apply_info(self, document: dict[str, Any]) -> dict[str, Any]:
        """The NIP-11 document with the operator's run-time name/description/icon; an empty
        override removes an optional field (an icon) and empties a required one."""
        for field in INFO_FIELDS:
            value = self.state.info.get(field)
            if value is None:
                continue
            if value or field != "icon":
                document[field] = value
            else:
                document.pop(field, None)
        return document

    def replace(self, state: ModerationState) -> None:
        """Swap in `state` and tell the listeners what changed."""
        previous = self.state
        self.state = state
        self.loaded = True
        if state.blocked_ips != previous.blocked_ips:
            for listener in self.on_blocked_ips:
                try:
                    listener(state.blocked_ips)
                except Exception:  # one faulty listener must not stop the others
                    log.exception("blocked-ip listener failed")

    async def reload(self, load: Load | None = None) -> None:
        """Re-read every decision (from the pool, or with `load`); on failure the previous state
        stays (raises for the caller to log: the next announcement or interval retries).

        Reloads run one at a time, so a read that began before a change can never replace the
        state read after it.
        """
        async with self._reloading:
            if load is not None:
                self.replace(await load())
            elif self.pool is not None:
                self.replace(await load_moderation(self.pool))
