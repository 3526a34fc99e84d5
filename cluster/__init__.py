"""A horizontally scaled, payment-gated Nostr relay cluster."""

__version__ = "0.1.0"
