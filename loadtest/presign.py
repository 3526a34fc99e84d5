"""Signing every event before the clock starts, kept as the exact text frame to send.

Pre-signing keeps the generator out of the measurement: one core sends 5,000 events/s when all
it does per event is one `send_str`. Big batches are signed in a process pool.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import orjson

from cluster.nostr.event import Event, has_valid_signature
from cluster.nostr.signing import Signer, event_frame
from cluster.payments.claims import payment_tag
from loadtest.errors import LoadTestError
from loadtest.files import Channel

FREE_KIND = 1
PRESIGN_POOL_THRESHOLD = 4000
"""Batches smaller than this are signed inline (no process pool, no fork)."""
MAX_EVENTS = 2_000_000
"""Upper bound of events one run may pre-sign (rate x duration)."""

Frame = tuple[str, str]
"""(event id, the exact `["EVENT", ...]` text frame)."""


def secret_for(seed: str, index: int) -> str:
    """A deterministic, valid secp256k1 secret per (seed, index)."""
    return hashlib.sha256(orjson.dumps([seed, index])).hexdigest()


def signed_event(signer: Signer, created_at: int, kind: int, tags: list[list[str]],
                 content: str, *, check: bool = False) -> Event:  # fmt: skip
    """A complete, valid event; `check` verifies it too (a sample per batch, to be sure)."""
    event = signer.sign(kind, content, tags, created_at)
    if check and not has_valid_signature(event):
        raise LoadTestError("a pre-signed event does not verify: the signer is broken")
    return event


@dataclass(frozen=True)
class SignJob:
    """Events for one connection: global index i = j * conns + conn for the j-th event."""

    secret: str
    kind: int
    conn: int
    conns: int
    count: int
    run: str
    content_bytes: int = 64
    groups: int = 0
    group_prefix: str = ""
    payments: tuple[Channel, ...] = ()
    """Channels this connection pays with, in rotation (event j uses j % len)."""
    price: int = 0
    nonce_base: int = 0
    created_at: int = 0


def sign_job(job: SignJob) -> list[Frame]:
    """(event id, the exact `["EVENT", ...]` text frame) for each event of the job."""
    signer = Signer(job.secret)
    # A claim pays only for events its channel's sender signed (rule 7, on by default).
    payers = {pay.secret: Signer(pay.secret) for pay in job.payments}
    created_at = job.created_at or int(time.time())
    out: list[Frame] = []
    pad = "x" * max(0, job.content_bytes - 40)
    for j in range(job.count):
        index = j * job.conns + job.conn
        tags: list[list[str]] = [["t", "loadtest"]]
        if job.groups:
            tags.append(["t", f"{job.group_prefix}{index % job.groups}"])
        if job.payments:
            # Rotating over several channels spaces the claims of one channel out in time,
            # so one event overtaking another on the same socket (the relay handles a
            # socket's EVENTs concurrently) does not turn into a stale nonce.
            pay = job.payments[j % len(job.payments)]
            nonce = job.nonce_base + j // len(job.payments)
            tags.append(payment_tag(pay.secret, pay.channel_id, job.price, nonce, pay.currency))
        author = payers[pay.secret] if job.payments else signer
        content = f"{job.run} {index} {pad}"
        event = signed_event(author, created_at, job.kind, tags, content, check=j % 500 == 0)
        out.append((event.id, event_frame(event)))
    return out


def presign(jobs: Sequence[SignJob], processes: int = 0) -> list[list[Frame]]:
    """Sign every job (one per connection), in a process pool when the batch is big."""
    total = sum(job.count for job in jobs)
    if total > MAX_EVENTS:
        raise LoadTestError(f"{total} events to pre-sign exceeds the bound of {MAX_EVENTS}")
    processes = processes or min(2, os.cpu_count() or 1)
    if processes <= 1 or total < PRESIGN_POOL_THRESHOLD:
        return [sign_job(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=processes, mp_context=get_context("spawn")) as pool:
        return list(pool.map(sign_job, jobs, chunksize=max(1, len(jobs) // (processes * 4))))


def publish_jobs(
    *,
    rate: float,
    duration: float,
    connections: int,
    kind: int,
    run: str,
    content_bytes: int = 64,
    groups: int = 0,
    group_prefix: str = "",
    payments: Sequence[Channel] = (),
    price: int = 0,
    signers: int = 16,
    nonce_base: int = 0,
) -> list[SignJob]:
    """One SignJob per connection covering rate x duration events, round-robin over them."""
    total = max(1, round(rate * duration))
    if payments and len(payments) < connections:
        raise LoadTestError(f"{connections} paid connections need as many channels")
    # Above any nonce an earlier run used (microseconds since the epoch).
    nonce_base = nonce_base or int(time.time() * 1_000_000)
    jobs = []
    for conn in range(connections):
        count = total // connections + (1 if conn < total % connections else 0)
        jobs.append(
            SignJob(
                secret=payments[conn].secret if payments else secret_for(run, conn % signers),
                payments=tuple(payments[conn::connections]),
                kind=kind,
                conn=conn,
                conns=connections,
                count=count,
                run=run,
                content_bytes=content_bytes,
                groups=groups,
                group_prefix=group_prefix,
                price=price,
                nonce_base=nonce_base,
            )
        )
    return jobs
