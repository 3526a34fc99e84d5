"""PostgreSQL `text` cannot hold U+0000; Nostr strings can. An injective escape for indexed text."""

from __future__ import annotations


def pg_text(value: str) -> str:
    """Escape backslash and NUL so every string maps to a distinct NUL-free string."""
    if "\\" not in value and "\x00" not in value:
        return value
    return value.replace("\\", "\\\\").replace("\x00", "\\0")
