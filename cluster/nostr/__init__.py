"""nostr."""
