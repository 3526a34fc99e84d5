"""Forward accepted claims to the Dassie node, from the outbox table, until acknowledged.

Rows are written in the same transaction as the event and its claim, so a crash between commit
and forwarding loses nothing: any worker of any instance picks the row up later.

No transaction is open while the node is called. A batch goes through three steps:

1. lease: one statement pushes the due rows' `next_attempt_at` past the forwarding time
   (`lease` seconds) and returns them; other workers skip leased rows, so two workers never
   forward the same row at once, and the connection goes back to the pool;
2. forward: `payment.recordClaim` for each row in turn, holding no connection; the batch stops
   before its lease runs out, so a slow node cannot make a lease expire under a live worker;
3. record: one short transaction marks acknowledged rows, postpones failed ones with backoff
   and moves refused ones to `payment_outbox_dead`.

A worker that dies between 1 and 3 leaves leases that expire; the rows are then forwarded again.
That is harmless: the node's recordClaim is idempotent on (channelId, nonce) and records each
pair once (cluster/ledger/store.py). What a failure means decides what happens to the row:

- the node could not answer (`DassieUnavailable`: unreachable, timeout, breaker open) or answered
  `internal_error` (its own database is away): postponed with exponential backoff, batch stops;
- the node answered a definitive error (unknown_channel, insufficient_balance, nonce_conflict,
  invalid_input, ...): retrying cannot change the answer, so the row is dead-lettered and
  counted in `relay_outbox_dead_letters_total`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from psycopg_pool import AsyncConnectionPool

from cluster import metrics
from cluster.payments.dassie import DassieError, DassieUnavailable
from cluster.store.payments import (
    OutboxEntry,
    bury,
    lease_due_entries,
    mark_forwarded,
    postpone,
    release,
)

log = logging.getLogger(__name__)

BATCH = 100
IDLE_POLL = 1.0
MAX_DELAY = 300.0
# Long enough for a batch against a slow node (the batch stops at LEASE_USE of it), short enough
# that the rows of a worker that died mid-batch wait at most a minute.
LEASE = 60.0
LEASE_USE = 0.75
# Error answers that say the node is unwell, not that the claim is wrong: retried like an outage.
# `invalid_response` is the client's verdict on a garbled answer (a proxy, a version skew).
TRANSIENT_CODES = frozenset({"internal_error", "invalid_response"})


class ClaimRecorder(Protocol):
    """What the forwarder needs of the node (DassieClient; tests wrap or fake it)."""

    async def record_claim(self, channel_id: str, amount: int, nonce: int, event_id: str) -> Any:
        """Record a claim; idempotent on (channel_id, nonce)."""
        ...


def retry_delay(attempts: int) -> float:
    """0.5 s, 1 s, 2 s, ... capped at 5 minutes."""
    return float(min(MAX_DELAY, 0.5 * 2 ** min(attempts, 20)))


def is_definitive(exc: DassieError) -> bool:
    """True when the node refused the claim itself, so the same call would be refused again."""
    return exc.code not in TRANSIENT_CODES


@dataclass
class BatchOutcome:
    """What became of each leased row; recorded in one transaction."""

    acked: list[int] = field(default_factory=list)
    postponed: list[tuple[OutboxEntry, float, str]] = field(default_factory=list)
    dead: list[tuple[OutboxEntry, str]] = field(default_factory=list)
    untried: list[OutboxEntry] = field(default_factory=list)


async def forward_batch(
    node: ClaimRecorder, entries: list[OutboxEntry], deadline: float
) -> BatchOutcome:
    """Call the node for each row until done, the node is away, or `deadline` (loop time)."""
    outcome = BatchOutcome()
    for index, entry in enumerate(entries):
        try:
            async with asyncio.timeout_at(deadline):
                await node.record_claim(entry.channel_id, entry.amount, entry.nonce, entry.event_id)
        except TimeoutError:
            # The lease is ending. Whether this call landed is unknown: retry it (idempotent).
            outcome.untried.extend(entries[index:])
            break
        except DassieUnavailable as exc:
            outcome.postponed.append((entry, retry_delay(entry.attempts), str(exc)))
            outcome.untried.extend(entries[index + 1 :])
            break
        except DassieError as exc:
            if not is_definitive(exc):
                outcome.postponed.append((entry, retry_delay(entry.attempts), str(exc)))
                outcome.untried.extend(entries[index + 1 :])
                break
            outcome.dead.append((entry, str(exc)))
            continue
        outcome.acked.append(entry.id)
    return outcome


class OutboxForwarder:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        node: ClaimRecorder,
        *,
        lease: float = LEASE,
        batch: int = BATCH,
    ) -> None:
        self._pool = pool
        self._node = node
        self._lease = lease
        self._batch = batch
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.forwarded = 0
        self.dead_letters = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-forwarder")

    def wake(self) -> None:
        """A claim was just committed: forward it now rather than at the next poll."""
        self._wakeup.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                settled = await self.forward_once()
            except Exception as exc:  # database away: keep the loop, try again shortly
                log.warning("outbox forwarding failed: %s", exc)
                settled = 0
            if settled == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), IDLE_POLL)
                self._wakeup.clear()

    async def forward_once(self) -> int:
        """Lease, forward and record one batch; returns how many rows left the outbox."""
        loop = asyncio.get_running_loop()
        # Measured before the lease is taken, so this deadline falls before the lease's end.
        deadline = loop.time() + self._lease * LEASE_USE
        entries = await lease_due_entries(self._pool, self._batch, self._lease)
        if not entries:
            return 0
        outcome = await forward_batch(self._node, entries, deadline)
        buried = await self._record(outcome)
        self.forwarded += len(outcome.acked)
        self.dead_letters += buried
        metrics.OUTBOX_FORWARDED.inc(len(outcome.acked))
        metrics.OUTBOX_DEAD_LETTERS.inc(buried)
        return len(outcome.acked) + buried

    async def _record(self, outcome: BatchOutcome) -> int:
        """One short transaction; if it fails the leases expire and the rows are sent again."""
        buried = 0
        async with self._pool.connection() as conn, conn.transaction():
            await mark_forwarded(conn, outcome.acked)
            for entry, delay, error in outcome.postponed:
                await postpone(conn, entry, delay, error)
            for entry, error in outcome.dead:
                log.error(
                    "node refused claim %s/%s for good, dead-lettered: %s",
                    entry.channel_id,
                    entry.nonce,
                    error,
                )
                buried += await bury(conn, entry.id, error)
            await release(conn, outcome.untried)
        return buried
