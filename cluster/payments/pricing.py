"""Prices of event kinds: configured defaults plus operator overrides from PostgreSQL.

Workers keep the merged table in process (L1) and re-read the overrides at most every
`pricing.refresh_seconds`, so `relay-cluster pricing set` reaches every worker without a restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import msgspec
from psycopg_pool import AsyncConnectionPool

from cluster.config import PricingSettings
from cluster.nostr.event import Event
from cluster.store.payments import load_kind_prices

log = logging.getLogger(__name__)

KIB = 1024


class PriceTable(msgspec.Struct, frozen=True):
    """Pure pricing: per-kind sats, a default for other kinds, plus sats per started KiB."""

    kinds: Mapping[int, int]
    default: int = 0
    per_kib: int = 0

    @classmethod
    def from_settings(
        cls, settings: PricingSettings, overrides: Mapping[int, int] | None = None
    ) -> PriceTable:
        kinds = {int(kind): sats for kind, sats in settings.kinds.items()}
        kinds.update(overrides or {})
        return cls(kinds=kinds, default=settings.default, per_kib=settings.per_kib)

    def base_price(self, kind: int) -> int:
        return self.kinds.get(kind, self.default)

    def price_of(self, event: Event) -> int:
        base = self.base_price(event.kind)
        if base == 0:
            return 0
        started_kib = -(-len(event.content.encode()) // KIB)
        return base + self.per_kib * started_kib

    @property
    def requires_payment(self) -> bool:
        return self.default > 0 or any(sats > 0 for sats in self.kinds.values())

    def publication_fees(self) -> list[dict[str, object]]:
        """NIP-11 `fees.publication`: one entry per price, listing the kinds it applies to."""
        by_price: dict[int, list[int]] = {}
        for kind, sats in sorted(self.kinds.items()):
            if sats > 0:
                by_price.setdefault(sats, []).append(kind)
        fees: list[dict[str, object]] = [
            {"amount": sats, "unit": "sats", "kinds": kinds} for sats, kinds in by_price.items()
        ]
        if self.default > 0:
            fees.append({"amount": self.default, "unit": "sats"})
        return fees


class Pricing:
    """The worker's L1 copy of the price table, refreshed from `kind_prices` when stale."""

    def __init__(self, settings: PricingSettings, pool: AsyncConnectionPool | None) -> None:
        self._settings = settings
        self._pool = pool
        self.table = PriceTable.from_settings(settings)
        self._loaded_at = float("-inf")

    async def current(self) -> PriceTable:
        if time.monotonic() - self._loaded_at >= self._settings.refresh_seconds:
            await self.refresh()
        return self.table

    async def refresh(self) -> None:
        """Re-read overrides; on a database error keep the previous table and retry later."""
        self._loaded_at = time.monotonic()
        if self._pool is None:
            return
        try:
            overrides = await load_kind_prices(self._pool)
        except Exception as exc:  # prices are not worth failing a write over; keep the last
            log.warning("could not refresh kind prices: %s", exc)
            return
        self.table = PriceTable.from_settings(self._settings, overrides)
