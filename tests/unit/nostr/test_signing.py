"""The one signer's fast path (prebuilt keypair) and the pre-signed frames the load tools send.

(tests/unit/nostr/test_event.py checks `Signer` through its public API; these pin the fast
path against the same vectors and against the fallback that coincurve's public API provides.)
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
import pytest

from cluster.nostr import signing
from cluster.nostr.event import Event, event_from_object, has_valid_signature, verify
from cluster.nostr.signing import Signer, event_frame
from cluster.payments.claims import TAG_NAME
from loadtest.files import Channel
from loadtest.presign import SignJob, presign, publish_jobs, sign_job
from tests.vectors import load

EVENTS = load("events.json")


def resign(signer: Signer, raw: dict[str, Any]) -> Event:
    return signer.sign(raw["kind"], raw["content"], raw["tags"], raw["created_at"])


@pytest.mark.parametrize("raw", EVENTS["valid"], ids=lambda raw: raw["content"][:20])
def test_fast_path_resigns_every_vector_so_that_it_verifies(raw: dict[str, Any]) -> None:
    signer = Signer(EVENTS["secret_key"])
    assert signer.fast
    event = resign(signer, raw)
    # Same key, same fields: the id is the vector's; the signature is a fresh valid one
    # (BIP-340 aux randomness differs per call).
    assert event.id == raw["id"] and event.pubkey == EVENTS["pubkey"]
    assert verify(event) is None
    assert event.sig != resign(signer, raw).sig


def test_fallback_without_the_cffi_bindings_signs_the_same_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(signing, "_lib", None)
    signer = Signer(EVENTS["secret_key"])
    assert not signer.fast
    raw = EVENTS["valid"][0]
    event = resign(signer, raw)
    assert event.id == raw["id"] and verify(event) is None


def test_a_fast_signature_is_bound_to_its_digest() -> None:
    signer = Signer()
    event = signer.sign(1, "one")
    other = signer.sign(1, "two")
    swapped = msgspec.structs.replace(event, sig=other.sig)
    assert has_valid_signature(event) and not has_valid_signature(swapped)


def test_event_frame_is_the_wire_message() -> None:
    event = Signer().sign(7, "+", [["e", "ab" * 32]])
    message = orjson.loads(event_frame(event))
    assert message[0] == "EVENT" and event_from_object(message[1]) == event


def test_presigned_jobs_are_valid_distinct_events_in_round_robin_order() -> None:
    jobs = publish_jobs(rate=30, duration=1, connections=3, kind=1, run="r", groups=2,
                        group_prefix="g-")  # fmt: skip
    plan = presign(jobs, processes=1)
    assert [len(frames) for frames in plan] == [10, 10, 10]
    events = [event_from_object(orjson.loads(frame)[1]) for frames in plan for _, frame in frames]
    assert all(verify(event) is None for event in events)
    assert len({event.id for event in events}) == 30
    # Event i of the run goes out on connection i % 3 and is addressed to group i % 2.
    first = [event_from_object(orjson.loads(plan[c][0][1])[1]) for c in range(3)]
    assert [e.content.split()[1] for e in first] == ["0", "1", "2"]
    assert [e.tag_values("t")[1] for e in first] == ["g-0", "g-1", "g-0"]


def test_paid_jobs_rotate_channels_with_rising_nonces() -> None:
    payer = Signer()
    channels = (Channel("chan-a", payer.secret), Channel("chan-b", payer.secret))
    job = SignJob(payer.secret, 4242, 0, 1, 4, "paid", payments=channels, price=10, nonce_base=100)
    events = [event_from_object(orjson.loads(frame)[1]) for _, frame in sign_job(job)]
    assert all(verify(event) is None and event.pubkey == payer.pubkey for event in events)
    tags = [next(tag for tag in e.tags if tag[0] == TAG_NAME) for e in events]
    # [name, method, channel, amount, nonce, signature, currency]: channels alternate, and
    # each channel's nonces rise from the base (so no claim of a channel is ever stale).
    assert [(t[2], t[3], t[4]) for t in tags] == [
        ("chan-a", "10", "100"), ("chan-b", "10", "100"),
        ("chan-a", "10", "101"), ("chan-b", "10", "101"),
    ]  # fmt: skip
