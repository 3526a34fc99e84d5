"""Paid events: pricing, payment tags, claim verification, channel state, outbox, Dassie RPC."""
