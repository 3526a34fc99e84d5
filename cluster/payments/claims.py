"""Payment tags and claim signatures: parse, sign and verify (pure; libsecp256k1 via coincurve).

The signed message is SHA-256 of the UTF-8 string `<channelId>:<amountSats>:<nonce>`, with the
three fields exactly as they appear in the tag; the signature is ECDSA secp256k1, r||s, low-S.
"""

from __future__ import annotations

import hashlib

from coincurve import PrivateKey, PublicKey
from coincurve.ecdsa import cdata_to_der, deserialize_compact

from cluster.payments.model import Currency, PaymentClaim

TAG_NAME = "payment"
TAG_METHOD = "ilp"
TAG_ARITY = 7
MAX_AMOUNT = 2**53 - 1
MAX_CHANNEL_ID = 256
# The protocol (docs/PAYMENTS.md) lists [A-Za-z0-9._:-]; its own vectors use '_'
# (channel_abc123), so '_' is accepted too (docs/PAYMENTS.md records the decision).
CHANNEL_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-_")
HEX = frozenset("0123456789abcdefABCDEF")
# The same shapes as regular expressions, for schemas (the ledger's RPC input validation).
CHANNEL_ID_PATTERN = rf"^[A-Za-z0-9_.:-]{{1,{MAX_CHANNEL_ID}}}$"
SIGNATURE_PATTERN = r"^[0-9a-fA-F]{128}([0-9a-fA-F]{2})?$"


class MalformedTag(ValueError):
    """The payment tag is not of the specified shape; the message says which part."""


def find_payment_tags(tags: list[list[str]]) -> list[list[str]]:
    return [tag for tag in tags if tag and tag[0] == TAG_NAME]


def _decimal(text: str, low: int, what: str) -> int:
    if not text or not text.isascii() or not text.isdigit() or len(text) > 16:
        raise MalformedTag(f"{what} must be a decimal integer")
    if len(text) > 1 and text[0] == "0":
        raise MalformedTag(f"{what} must not have leading zeros")
    value = int(text)
    if not low <= value <= MAX_AMOUNT:
        raise MalformedTag(f"{what} out of range")
    return value


def parse_payment_tag(tag: list[str]) -> PaymentClaim:
    """Validate one `["payment","ilp",channel,amount,nonce,signature,currency]` tag."""
    if len(tag) != TAG_ARITY or tag[0] != TAG_NAME or tag[1] != TAG_METHOD:
        raise MalformedTag("expected [payment, ilp, channelId, amount, nonce, signature, currency]")
    _, _, channel_id, amount_text, nonce_text, signature_hex, currency_text = tag
    if not 1 <= len(channel_id) <= MAX_CHANNEL_ID or not set(channel_id) <= CHANNEL_ID_CHARS:
        raise MalformedTag("channelId must be 1-256 characters of [A-Za-z0-9._:-]")
    amount = _decimal(amount_text, 1, "amount")
    nonce = _decimal(nonce_text, 0, "nonce")
    if len(signature_hex) not in (128, 130) or not set(signature_hex) <= HEX:
        raise MalformedTag("signature must be 128 or 130 hex characters")
    try:
        currency = Currency(currency_text)
    except ValueError as exc:
        raise MalformedTag("currency must be one of BTC, BASE, AKT, XRP") from exc
    return PaymentClaim(
        channel_id=channel_id,
        amount=amount,
        nonce=nonce,
        signature=bytes.fromhex(signature_hex[:128]),
        currency=currency,
        amount_text=amount_text,
        nonce_text=nonce_text,
    )


def claim_of(
    channel_id: str, amount: int, nonce: int, signature_hex: str, currency: Currency
) -> PaymentClaim:
    """A claim from already validated fields (the node's verifyPaymentClaim input): the signed
    texts are the canonical decimal forms, as a client that signs with `sign_claim` wrote them."""
    return PaymentClaim(
        channel_id=channel_id,
        amount=amount,
        nonce=nonce,
        signature=bytes.fromhex(signature_hex[:128]),
        currency=currency,
        amount_text=str(amount),
        nonce_text=str(nonce),
    )


def claim_digest(channel_id: str, amount_text: str, nonce_text: str) -> bytes:
    return hashlib.sha256(f"{channel_id}:{amount_text}:{nonce_text}".encode()).digest()


def verify_claim_signature(claim: PaymentClaim, sender_pubkey_hex: str) -> bool:
    """ECDSA check against the channel's compressed sender key; high-S signatures fail."""
    try:
        key = PublicKey(bytes.fromhex(sender_pubkey_hex))
        der = cdata_to_der(deserialize_compact(claim.signature))
        digest = claim_digest(claim.channel_id, claim.amount_text, claim.nonce_text)
        return bool(key.verify(der, digest, hasher=None))
    except (ValueError, TypeError):
        return False


def signed_by_author(claim: PaymentClaim, author_pubkey: str) -> bool:
    """Whether the claim is signed by the key behind a Nostr x-only pubkey (either parity).

    With claim binding on, that key must be the channel's sender, so a claim that fails this
    is refused before anything asks the ledger node about its channel (docs/PAYMENTS.md).
    """
    return any(verify_claim_signature(claim, prefix + author_pubkey) for prefix in ("02", "03"))


def sign_claim(secret_hex: str, channel_id: str, amount: int, nonce: int) -> str:
    """r||s hex (128 chars, RFC 6979, low-S) over the claim digest: for clients and load tests."""
    digest = claim_digest(channel_id, str(amount), str(nonce))
    recoverable = PrivateKey(bytes.fromhex(secret_hex)).sign_recoverable(digest, hasher=None)
    return bytes(recoverable[:64]).hex()


def payment_tag(
    secret_hex: str, channel_id: str, amount: int, nonce: int, currency: Currency | str
) -> list[str]:
    """A complete, signed payment tag to add to an event before signing the event."""
    return [
        TAG_NAME,
        TAG_METHOD,
        channel_id,
        str(amount),
        str(nonce),
        sign_claim(secret_hex, channel_id, amount, nonce),
        str(Currency(currency)),
    ]


def sender_pubkey_of(secret_hex: str) -> str:
    """The compressed (66 hex) public key that a channel's senderPubkey must hold."""
    return PrivateKey(bytes.fromhex(secret_hex)).public_key.format(compressed=True).hex()
