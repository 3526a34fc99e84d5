"""Typed NIP-01 rejections: a machine-readable prefix plus a human-readable message."""

from __future__ import annotations

from enum import StrEnum

import msgspec


class Prefix(StrEnum):
    """The machine-readable prefixes NIP-01 defines for OK and CLOSED messages."""

    DUPLICATE = "duplicate"
    POW = "pow"
    BLOCKED = "blocked"
    RATE_LIMITED = "rate-limited"
    INVALID = "invalid"
    RESTRICTED = "restricted"
    ERROR = "error"
    AUTH_REQUIRED = "auth-required"
    UNSUPPORTED = "unsupported"


class Rejection(msgspec.Struct, frozen=True):
    """Why the relay refused something; rendered once, in `text`, for OK/CLOSED messages."""

    prefix: Prefix
    message: str

    @property
    def text(self) -> str:
        return f"{self.prefix}: {self.message}"


def invalid(message: str) -> Rejection:
    return Rejection(Prefix.INVALID, message)


def blocked(message: str) -> Rejection:
    return Rejection(Prefix.BLOCKED, message)


def restricted(message: str) -> Rejection:
    return Rejection(Prefix.RESTRICTED, message)


def error(message: str) -> Rejection:
    return Rejection(Prefix.ERROR, message)


def rate_limited(message: str) -> Rejection:
    return Rejection(Prefix.RATE_LIMITED, message)
