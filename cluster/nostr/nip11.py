"""The NIP-11 relay information document, built from the real configuration (pure)."""

from __future__ import annotations

from typing import Any

from cluster import __version__
from cluster.config import Settings
from cluster.payments.pricing import PriceTable

SUPPORTED_NIPS = [1, 9, 11, 13, 40, 42, 45, 70]
SOFTWARE = "relay-cluster"


def information_document(settings: Settings, prices: PriceTable | None = None) -> dict[str, Any]:
    info, limits = settings.info, settings.limits
    document: dict[str, Any] = {
        "name": info.name,
        "description": info.description,
        "supported_nips": SUPPORTED_NIPS,
        "software": SOFTWARE,
        "version": __version__,
        "limitation": {
            "max_message_length": limits.max_message_bytes,
            "max_subscriptions": limits.max_subscriptions,
            "max_filters": limits.max_filters,
            "max_limit": limits.max_limit,
            "default_limit": limits.default_limit,
            "max_subid_length": limits.max_subid_length,
            "max_event_tags": limits.max_event_tags,
            "max_content_length": limits.max_content_length,
            "min_pow_difficulty": settings.policy.min_pow_difficulty,
            "auth_required": settings.auth.required_for_writes,
            "payment_required": bool(prices and prices.requires_payment),
            "restricted_writes": settings.auth.required_for_writes
            or bool(prices and prices.requires_payment)
            or settings.policy.min_pow_difficulty > 0,
            "created_at_lower_limit": limits.created_at_past,
            "created_at_upper_limit": limits.created_at_future,
        },
    }
    if prices is not None and prices.requires_payment:
        document["fees"] = {"publication": prices.publication_fees()}
    for key in ("pubkey", "contact", "icon"):
        value = getattr(info, key)
        if value:
            document[key] = value
    return document
