"""Payment tags: parse_payment_tag refuses garbage with MalformedTag only, and every tag made by
payment_tag parses back to the same claim with a signature that verifies."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.payments.claims import (
    CHANNEL_ID_CHARS,
    MAX_AMOUNT,
    MAX_CHANNEL_ID,
    MalformedTag,
    parse_payment_tag,
    payment_tag,
    sender_pubkey_of,
    verify_claim_signature,
)
from cluster.payments.model import Currency

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
CHANNEL_ALPHABET = "".join(sorted(CHANNEL_ID_CHARS))

secrets = st.integers(min_value=1, max_value=CURVE_ORDER - 1).map(
    lambda k: k.to_bytes(32, "big").hex()
)
channel_ids = st.text(alphabet=CHANNEL_ALPHABET, min_size=1, max_size=MAX_CHANNEL_ID)
amounts = st.one_of(
    st.integers(min_value=1, max_value=MAX_AMOUNT), st.sampled_from([1, MAX_AMOUNT])
)
nonces = st.one_of(st.integers(min_value=0, max_value=MAX_AMOUNT), st.sampled_from([0, MAX_AMOUNT]))
currencies = st.sampled_from(list(Currency))

# Each field: sometimes right, sometimes nearly right, sometimes anything.
decimals = st.one_of(
    st.integers(min_value=-5, max_value=MAX_AMOUNT + 5).map(str),
    st.text(alphabet="0123456789", max_size=20),
    st.sampled_from(["", "0", "00", "01", "-1", "+1", " 1", "1 ", "1.0", "1e3", "\u0661", "²"]),
    st.text(max_size=20),
)
hex_text = st.one_of(
    st.binary(min_size=64, max_size=65).map(bytes.hex),
    st.binary(min_size=64, max_size=65).map(lambda b: b.hex().upper()),
    st.text(alphabet="0123456789abcdefABCDEFg \n", max_size=132),
    st.text(max_size=140),
)
fields = [
    st.one_of(st.just("payment"), st.text(max_size=10)),
    st.one_of(st.just("ilp"), st.text(max_size=5)),
    st.one_of(channel_ids, st.text(max_size=300), st.just("")),
    decimals,
    decimals,
    hex_text,
    st.one_of(
        currencies.map(str), st.sampled_from(["btc", "ETH", "", "BTC "]), st.text(max_size=5)
    ),
]
near_tags = (
    st.tuples(*fields)
    .map(list)
    .flatmap(
        lambda tag: st.one_of(
            st.just(tag),
            st.integers(min_value=0, max_value=len(tag)).map(lambda n: tag[:n]),
            st.lists(st.text(max_size=10), max_size=3).map(lambda extra: tag + extra),
        )
    )
)


@FUZZ
@given(st.one_of(near_tags, st.lists(st.text(max_size=80), max_size=10)))
def test_only_malformed_tag_is_raised(tag: list[str]) -> None:
    try:
        claim = parse_payment_tag(tag)
    except MalformedTag as exc:
        assert str(exc)
        return
    # Accepted: every field is what the specification allows.
    assert len(tag) == 7 and tag[:2] == ["payment", "ilp"]
    assert 1 <= claim.amount <= MAX_AMOUNT and 0 <= claim.nonce <= MAX_AMOUNT
    assert str(claim.amount) == claim.amount_text == tag[3]
    assert str(claim.nonce) == claim.nonce_text == tag[4]
    assert claim.channel_id == tag[2] and set(claim.channel_id) <= CHANNEL_ID_CHARS
    assert len(claim.signature) == 64 and claim.currency == tag[6]


@settings(max_examples=150, deadline=None, database=None)
@given(secrets, channel_ids, amounts, nonces, currencies)
def test_made_tags_round_trip(
    secret: str, channel_id: str, amount: int, nonce: int, currency: Currency
) -> None:
    tag = payment_tag(secret, channel_id, amount, nonce, currency)
    claim = parse_payment_tag(tag)
    assert (claim.channel_id, claim.amount, claim.nonce, claim.currency) == (
        channel_id,
        amount,
        nonce,
        currency,
    )
    sender = sender_pubkey_of(secret)
    assert verify_claim_signature(claim, sender)
    # The 65-byte form (a recovery byte appended) and upper-case hex parse to the same claim.
    assert parse_payment_tag([*tag[:5], tag[5] + "01", tag[6]]) == claim
    assert parse_payment_tag([*tag[:5], tag[5].upper(), tag[6]]) == claim
    # The signature covers every field: changing one makes it fail.
    bumped = parse_payment_tag([*tag[:3], str(amount % MAX_AMOUNT + 1), *tag[4:]])
    assert not verify_claim_signature(bumped, sender)
