"""Forward accepted claims to the Dassie node, from the outbox table, until acknowledged.

Rows are written in the same transaction as the event and its claim, so a crash between commit
and forwarding loses nothing: any worker of any instance picks the row up later. Rows are locked
with SKIP LOCKED while being forwarded, so two workers never forward the same row at once; the
node's recordClaim is idempotent on (channelId, nonce), so a retry after an ambiguous failure
is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from psycopg_pool import AsyncConnectionPool

from cluster import metrics
from cluster.payments.dassie import DassieClient, DassieError, DassieUnavailable
from cluster.store.payments import claim_due_entries, mark_forwarded, postpone

log = logging.getLogger(__name__)

BATCH = 100
IDLE_POLL = 1.0
MAX_DELAY = 300.0


def retry_delay(attempts: int) -> float:
    """0.5 s, 1 s, 2 s, ... capped at 5 minutes."""
    return float(min(MAX_DELAY, 0.5 * 2 ** min(attempts, 20)))


class OutboxForwarder:
    def __init__(self, pool: AsyncConnectionPool, node: DassieClient) -> None:
        self._pool = pool
        self._node = node
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.forwarded = 0

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
                forwarded = await self.forward_once()
            except Exception as exc:  # database away: keep the loop, try again shortly
                log.warning("outbox forwarding failed: %s", exc)
                forwarded = 0
            if forwarded == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), IDLE_POLL)
                self._wakeup.clear()

    async def forward_once(self) -> int:
        """Forward one batch of due rows; returns how many the node acknowledged."""
        async with self._pool.connection() as conn, conn.transaction():
            entries = await claim_due_entries(conn, BATCH)
            done: list[int] = []
            for entry in entries:
                try:
                    await self._node.record_claim(
                        entry.channel_id, entry.amount, entry.nonce, entry.event_id
                    )
                except DassieUnavailable as exc:
                    # The node is away: postpone this row, leave the rest due, stop the batch.
                    await postpone(conn, entry.id, retry_delay(entry.attempts), str(exc))
                    break
                except DassieError as exc:
                    log.error("node refused claim %s/%s: %s", entry.channel_id, entry.nonce, exc)
                    await postpone(conn, entry.id, retry_delay(entry.attempts + 4), str(exc))
                    continue
                done.append(entry.id)
            await mark_forwarded(conn, done)
        self.forwarded += len(done)
        metrics.OUTBOX_FORWARDED.inc(len(done))
        return len(done)
