"""The NIP-11 relay information document, built from the real configuration (pure)."""

from __future__ import annotations

from typing import Any

from cluster import __version__
from cluster.config import Settings

Fee = dict[str, object]
"""One NIP-11 publication fee, e.g. {"kinds": [1], "amount": 10, "unit": "sats"}."""

SUPPORTED_NIPS = [1, 9, 11, 13, 40, 42, 45, 62, 70, 86]
SOFTWARE = "relay-cluster"


def supported_nips(settings: Settings) -> list[int]:
    """NIP-50 and NIP-77 only while they are enabled."""
    nips = list(SUPPORTED_NIPS)
    if settings.search.enabled:
        nips.append(50)
    if settings.negentropy.enabled:
        nips.append(77)
    return sorted(nips)


def information_document(settings: Settings, fees: list[Fee] | None = None) -> dict[str, Any]:
    """`fees` are the publication fees in force (none: every kind is free); the caller reads
    them from the price table, so this module stays free of payments and I/O."""
    info, limits = settings.info, settings.limits
    paid = bool(fees)
    document: dict[str, Any] = {
        "name": info.name,
        "description": info.description,
        "supported_nips": supported_nips(settings),
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
            "payment_required": paid,
            "restricted_writes": settings.auth.required_for_writes
            or paid
            or settings.policy.min_pow_difficulty > 0,
            "created_at_lower_limit": limits.created_at_past,
            "created_at_upper_limit": limits.created_at_future,
        },
    }
    if fees:
        document["fees"] = {"publication": fees}
    for key in ("pubkey", "contact", "icon"):
        value = getattr(info, key)
        if value:
            document[key] = value
    return document
