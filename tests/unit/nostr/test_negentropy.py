"""Negentropy codec and range algorithm, against naive references and random sets."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.nostr.negentropy import ClientRound, Negentropy, Storage
from cluster.nostr.negentropy_codec import (
    INFINITY,
    Bound,
    Mode,
    NegentropyError,
    Reader,
    Writer,
    encode_varint,
    fingerprint,
)

ID_SIZE = 32


def random_items(rnd: random.Random, count: int, spread: int) -> list[tuple[int, bytes]]:
    return [(1_000 + rnd.randrange(spread), rnd.randbytes(32)) for _ in range(count)]


def reconcile(
    client_items: list[tuple[int, bytes]],
    server_items: list[tuple[int, bytes]],
    frame: int = 0,
    max_rounds: int = 10_000,
) -> tuple[set[bytes], set[bytes], int]:
    """Run a whole exchange; every message must respect the frame limit."""
    client = Negentropy(Storage.from_items(client_items), frame)
    server = Negentropy(Storage.from_items(server_items), frame)
    message: bytes | None = client.initiate()
    have: set[bytes] = set()
    need: set[bytes] = set()
    rounds = 0
    while message is not None:
        rounds += 1
        assert rounds < max_rounds, "reconciliation does not terminate"
        if frame:
            assert len(message) <= frame
        reply = server.reconcile(message)
        if frame:
            assert len(reply) <= frame
        step = client.client_reconcile(reply)
        assert not (set(step.have) & have) and not (set(step.need) & need), "reported twice"
        have |= set(step.have)
        need |= set(step.need)
        message = step.message
    return have, need, rounds


# ---- codec -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "8100"),
        (16383, "ff7f"),
        (16384, "818000"),
        (2**64 - 1, "81ffffffffffffffff7f"),
    ],
)
def test_varints_are_base128_big_endian(value: int, encoded: str) -> None:
    assert encode_varint(value).hex() == encoded
    assert Reader(bytes.fromhex(encoded)).varint() == value


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("", "prematurely"),
        ("80", "prematurely"),
        ("ff" * 10 + "00", "longer than 10"),
        ("82" + "ff" * 8 + "7f", "64 bits"),
    ],
)
def test_bad_varints_are_refused(data: str, message: str) -> None:
    with pytest.raises(NegentropyError, match=message):
        Reader(bytes.fromhex(data)).varint()


def test_bounds_delta_encode_timestamps_and_infinity_is_zero() -> None:
    bounds = [Bound(5), Bound(5, b"\xab"), Bound(1000, bytes(range(32))), Bound(INFINITY)]
    writer = Writer()
    for bound in bounds:
        writer.bound(bound)
    # 5 -> 1+5; same timestamp -> 1+0 then prefix; 1000 -> 1+995 (two bytes); infinity -> 0.
    assert bytes(writer.out[:2]) == b"\x06\x00"
    assert bytes(writer.out[2:5]) == b"\x01\x01\xab"
    reader = Reader(bytes(writer.out))
    assert [reader.bound() for _ in bounds] == bounds
    assert reader.at_end


def test_bound_prefix_longer_than_an_id_is_refused() -> None:
    with pytest.raises(NegentropyError, match="longer than 32"):
        Reader(b"\x01\x21" + bytes(33)).bound()


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(NegentropyError, match="mode 3"):
        Reader(b"\x03").mode()
    assert Reader(b"\x02").mode() is Mode.ID_LIST


def test_fingerprint_is_sha256_of_sum_and_count() -> None:
    ids = [random.Random(1).randbytes(32) for _ in range(3)]
    total = sum(int.from_bytes(item, "little") for item in ids)
    payload = (total % 2**256).to_bytes(32, "little") + b"\x03"
    assert fingerprint(total, 3) == hashlib.sha256(payload).digest()[:16]
    assert fingerprint(0, 0) == hashlib.sha256(bytes(32) + b"\x00").digest()[:16]


# ---- storage ---------------------------------------------------------------------------------


def test_storage_fingerprints_equal_naive_sums() -> None:
    rnd = random.Random(2)
    items = random_items(rnd, 500, 40)
    storage = Storage.from_items(items)
    ordered = sorted(items)
    for _ in range(200):
        lower, upper = sorted((rnd.randrange(501), rnd.randrange(501)))
        total = sum(int.from_bytes(item_id, "little") for _, item_id in ordered[lower:upper])
        assert storage.fingerprint(lower, upper) == fingerprint(total, upper - lower)


def test_sum_wraps_modulo_2_256() -> None:
    top = b"\xff" * 32
    storage = Storage.from_items([(1, top), (2, b"\x02" + bytes(31))])
    # (2^256 - 1) + 2 = 1 (mod 2^256)
    assert storage.fingerprint(0, 2) == fingerprint(1, 2)


def test_lower_bound_equals_a_linear_scan() -> None:
    rnd = random.Random(3)
    items = random_items(rnd, 400, 5)  # many equal timestamps
    storage = Storage.from_items(items)
    ordered = sorted(items)
    for _ in range(500):
        timestamp = rnd.choice([1_000 + rnd.randrange(6), 0, INFINITY])
        base = rnd.choice(ordered)[1]
        prefix = (
            base[: rnd.randrange(33)] if rnd.random() < 0.7 else rnd.randbytes(rnd.randrange(4))
        )
        bound = Bound(timestamp, prefix)
        key = (timestamp, bound.padded_id)
        expected = next((i for i, item in enumerate(ordered) if item >= key), len(ordered))
        assert storage.lower_bound(0, len(storage), bound) == expected


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([(1, bytes(32)), (1, bytes(32))], "duplicate"),
        ([(1, bytes(31))], "32 bytes"),
        ([(INFINITY, bytes(32))], "reserved"),
        ([(-1, bytes(32))], "timestamps"),
    ],
)
def test_storage_refuses_bad_items(items: list[tuple[int, bytes]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Storage.from_items(items)


# ---- reconciliation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shared", "only_client", "only_server", "spread", "frame"),
    [
        (0, 0, 0, 10, 0),
        (0, 5, 0, 10, 0),
        (0, 0, 5, 10, 0),
        (10, 3, 4, 2, 0),
        (1000, 0, 0, 100, 4096),
        (1000, 1, 0, 100, 4096),
        (3000, 40, 60, 30, 4096),
        (3000, 300, 200, 3, 4096),  # many ties: bounds carry id prefixes
        (20000, 200, 200, 20000, 60000),
        (20000, 200, 200, 20000, 0),
    ],
)
def test_reconciliation_finds_exactly_the_differences(
    shared: int, only_client: int, only_server: int, spread: int, frame: int
) -> None:
    rnd = random.Random(shared * 7 + only_client)
    common = random_items(rnd, shared, spread)
    mine = random_items(rnd, only_client, spread)
    theirs = random_items(rnd, only_server, spread)
    have, need, _ = reconcile(common + mine, common + theirs, frame)
    assert have == {item_id for _, item_id in mine}
    assert need == {item_id for _, item_id in theirs}


def test_a_missing_contiguous_block_is_found_under_a_small_frame_limit() -> None:
    """The case the reference's closing fingerprint could hide: one side lacks a whole run."""
    rnd = random.Random(9)
    items = sorted(random_items(rnd, 6000, 6000))
    for start in (0, 100, 2500, 5900):
        block = items[start : start + 900]
        rest = items[:start] + items[start + 900 :]
        have, need, _ = reconcile(items, rest, 4096)
        assert have == {item_id for _, item_id in block} and need == set()
        have, need, _ = reconcile(rest, items, 4096)
        assert need == {item_id for _, item_id in block} and have == set()


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 2**32),
    st.integers(0, 400),
    st.integers(1, 60),
    st.floats(0.0, 1.0),
    st.sampled_from([0, 4096]),
)
def test_random_sets_reconcile(
    seed: int, size: int, spread: int, overlap: float, frame: int
) -> None:
    """Sets drawn from a seed (hypothesis picks sizes, tie density and overlap, and shrinks)."""
    rnd = random.Random(seed)
    universe = list(dict.fromkeys(random_items(rnd, size, spread)))
    client, server = [], []
    for item in universe:
        if rnd.random() < overlap:
            client.append(item)
            server.append(item)
        elif rnd.random() < 0.5:
            client.append(item)
        else:
            server.append(item)
    have, need, _ = reconcile(client, server, frame)
    client_ids = {item_id for _, item_id in client}
    server_ids = {item_id for _, item_id in server}
    assert have == client_ids - server_ids
    assert need == server_ids - client_ids


def test_equal_sets_finish_in_one_round_with_a_bare_version_byte() -> None:
    items = random_items(random.Random(4), 5000, 500)
    client = Negentropy(Storage.from_items(items))
    server = Negentropy(Storage.from_items(items))
    reply = server.reconcile(client.initiate())
    assert reply == b"\x61"
    assert client.client_reconcile(reply) == ClientRound(None, [], [])


def test_server_answers_an_unknown_version_with_its_own() -> None:
    server = Negentropy(Storage.from_items([]))
    assert server.reconcile(b"\x62\x00\x00") == b"\x61"


@pytest.mark.parametrize(
    ("message", "text"),
    [
        (b"", "prematurely"),
        (b"\x01", "version"),
        (b"\x61\x00", "prematurely"),
        (b"\x61\x00\x00\x01" + bytes(5), "prematurely"),
        (b"\x61\x00\x00\x07", "mode"),
        (b"\x61\x00\x00\x02\x7f" + bytes(64), "longer than the message"),
    ],
)
def test_malformed_messages_raise(message: bytes, text: str) -> None:
    server = Negentropy(Storage.from_items(random_items(random.Random(5), 50, 5)))
    with pytest.raises(NegentropyError, match=text):
        server.reconcile(message)


def test_client_refuses_a_version_it_does_not_speak() -> None:
    client = Negentropy(Storage.from_items([]))
    client.initiate()
    with pytest.raises(NegentropyError, match="unsupported"):
        client.client_reconcile(b"\x62")


def test_roles_are_enforced_and_frame_limit_has_a_floor() -> None:
    neg = Negentropy(Storage.from_items([]))
    with pytest.raises(RuntimeError):
        neg.client_reconcile(b"\x61")
    neg.initiate()
    with pytest.raises(RuntimeError):
        neg.reconcile(b"\x61")
    with pytest.raises(ValueError, match="4096"):
        Negentropy(Storage.from_items([]), 1000)


def test_a_full_frame_ends_with_the_true_fingerprint_of_everything_not_yet_written() -> None:
    """Where a reply stops at the frame limit, its closing range runs from the last bound
    written to infinity, and its fingerprint is of exactly the items in there (the reference
    leaves out the range it was processing, which a peer could then match by accident)."""
    rnd = random.Random(11)
    server_items = random_items(rnd, 20000, 20000)
    client_items = random_items(rnd, 20000, 20000)  # nothing shared: every range mismatches
    storage = Storage.from_items(server_items)
    client = Negentropy(Storage.from_items(client_items), 4096)
    server = Negentropy(storage, 4096)
    step = client.client_reconcile(server.reconcile(client.initiate()))
    assert step.message is not None
    reply = server.reconcile(step.message)
    assert len(reply) <= 4096
    reader = Reader(reply)
    assert reader.byte() == 0x61
    previous = Bound(0)
    while True:
        bound, mode = reader.bound(), reader.mode()
        if bound.timestamp == INFINITY:
            break
        if mode is Mode.FINGERPRINT:
            reader.take(16)
        elif mode is Mode.ID_LIST:
            reader.take(32 * reader.varint())
        previous = bound
    assert mode is Mode.FINGERPRINT and reader.at_end is False
    closing = reader.take(16)
    assert reader.at_end
    start = storage.lower_bound(0, len(storage), previous)
    assert 0 < start < len(storage)
    assert closing == storage.fingerprint(start, len(storage))
