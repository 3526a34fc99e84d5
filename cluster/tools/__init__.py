"""Command implementations for people: channels, payment tags, prices, publishing."""
