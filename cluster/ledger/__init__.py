"""A Dassie-compatible ledger node serving the payment procedures the relay needs."""
