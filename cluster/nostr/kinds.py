"""NIP-01 kind classes: how long an event lives and what it replaces."""

from __future__ import annotations

from enum import Enum

DELETION = 5
AUTH = 22242


class KindClass(Enum):
    REGULAR = "regular"
    REPLACEABLE = "replaceable"
    EPHEMERAL = "ephemeral"
    ADDRESSABLE = "addressable"


def classify(kind: int) -> KindClass:
    """Place a kind in its NIP-01 range; 0 and 3 are replaceable for historical reasons."""
    if kind in (0, 3) or 10000 <= kind < 20000:
        return KindClass.REPLACEABLE
    if 20000 <= kind < 30000:
        return KindClass.EPHEMERAL
    if 30000 <= kind < 40000:
        return KindClass.ADDRESSABLE
    return KindClass.REGULAR


def is_ephemeral(kind: int) -> bool:
    return 20000 <= kind < 30000
