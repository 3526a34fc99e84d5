"""NIP-13 proof of work: leading zero bits of the event id, and the committed target (pure)."""

from __future__ import annotations

from cluster.nostr.event import Event, is_lower_hex
from cluster.nostr.rejection import Prefix, Rejection

# One lookup instead of int(char, 16): int() also accepts non-ASCII digits such as U+0661.
_NIBBLES = {char: int(char, 16) for char in "0123456789abcdefABCDEF"}


def leading_zero_bits(event_id_hex: str) -> int:
    """Number of leading zero bits of a hex id (NIP-13 difficulty); ValueError on non-hex."""
    bits = 0
    for char in event_id_hex:
        nibble = _NIBBLES.get(char)
        if nibble is None:
            raise ValueError(f"not a hex digit: {char!r}")
        if nibble:
            return bits + 4 - nibble.bit_length()
        bits += 4
    return bits


def committed_target(event: Event) -> int | None:
    """The target difficulty of the first `["nonce", <nonce>, <target>]` tag, if any.

    Raises ValueError when the tag has a target that is not a small decimal integer.
    """
    for tag in event.tags:
        if tag and tag[0] == "nonce":
            if len(tag) < 3:
                return None
            target = tag[2]
            if not target.isascii() or not target.isdigit() or len(target) > 3:
                raise ValueError("nonce tag target must be a decimal integer")
            return int(target)
    return None


def check_pow(event: Event, min_difficulty: int) -> Rejection | None:
    """`pow:` rejection unless the id has `min_difficulty` leading zero bits.

    NIP-13: a nonce tag commits to a target so that a spammer who got lucky on a lower target
    cannot pass; a committed target below the minimum is refused whatever the id looks like.
    Events without a committed target are judged by their id alone.
    """
    if min_difficulty <= 0:
        return None
    if not is_lower_hex(event.id, 64):
        return Rejection(Prefix.POW, "event id is not 64 lowercase hex characters")
    try:
        target = committed_target(event)
    except ValueError as exc:
        return Rejection(Prefix.POW, str(exc))
    if target is not None and target < min_difficulty:
        return Rejection(
            Prefix.POW, f"committed target difficulty {target} is less than {min_difficulty}"
        )
    difficulty = leading_zero_bits(event.id)
    if difficulty < min_difficulty:
        return Rejection(Prefix.POW, f"difficulty {difficulty} is less than {min_difficulty}")
    return None
