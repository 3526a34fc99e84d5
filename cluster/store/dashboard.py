"""What the operator dashboard reads from PostgreSQL: revenue, claims, the outbox, channels.

Revenue joins payment_claims with events for the kind (a claim whose event was deleted since
counts under kind NULL) and with payment_channels for the currency (the channel's blockchain:
amounts are in that chain's unit). payment_claims has no index on accepted_at, so the revenue
and claims/s reads are sequential scans; they run under a 2 s statement timeout, and the
endpoint caches the result for a few seconds whatever the number of viewers.
"""

from __future__ import annotations

from typing import Any

import msgspec
from psycopg_pool import AsyncConnectionPool

from cluster.store.pool import statement_timeout

TIMEOUT_MS = 2000
OPEN_CHANNELS_SHOWN = 20

REVENUE = """
SELECT e.kind, c.blockchain, count(*), sum(p.amount)::bigint
FROM payment_claims p
JOIN payment_channels c USING (channel_id)
LEFT JOIN events e ON e.id = p.event_id
GROUP BY e.kind, c.blockchain
ORDER BY sum(p.amount) DESC
"""
RECENT_CLAIMS = """
SELECT count(*) FILTER (WHERE accepted_at > now() - interval '60 seconds'),
       count(*) FILTER (WHERE accepted_at > now() - interval '10 seconds')
FROM payment_claims
WHERE accepted_at > now() - interval '60 seconds'
"""
OUTBOX = """
SELECT count(*), extract(epoch FROM now() - min(created_at))::float8,
       count(*) FILTER (WHERE last_error IS NOT NULL)
FROM payment_outbox WHERE acked_at IS NULL
"""
DEAD_LETTERS = "SELECT count(*) FROM payment_outbox_dead"
OPEN_TOTALS = """
SELECT blockchain, count(*), sum(capacity)::bigint, sum(spent)::bigint
FROM payment_channels WHERE status = 'OPEN' GROUP BY blockchain ORDER BY blockchain
"""
OPEN_CHANNELS = """
SELECT channel_id, blockchain, sender_pubkey, capacity, spent, expiration,
       extract(epoch FROM refreshed_at)::float8
FROM payment_channels WHERE status = 'OPEN'
ORDER BY spent DESC, channel_id LIMIT %s
"""


class Revenue(msgspec.Struct, frozen=True):
    kind: int | None
    currency: str
    claims: int
    amount: int


class OpenChannels(msgspec.Struct, frozen=True):
    currency: str
    count: int
    capacity: int
    spent: int


class Channel(msgspec.Struct, frozen=True):
    channel_id: str
    currency: str
    sender: str
    capacity: int
    spent: int
    expiration: int
    refreshed_at: float


class PaymentFigures(msgspec.Struct, frozen=True):
    revenue: list[Revenue]
    claims_last_minute: int
    claims_per_second: float
    """Over the last 10 s."""
    outbox_backlog: int
    outbox_oldest_seconds: float | None
    outbox_failing: int
    """Backlog rows whose last forwarding attempt failed (the node refused or was away)."""
    dead_letters: int
    open_totals: list[OpenChannels]
    open_channels: list[Channel]


async def payment_figures(pool: AsyncConnectionPool) -> PaymentFigures:
    with statement_timeout(TIMEOUT_MS):
        async with pool.connection() as conn:
            revenue = await (await conn.execute(REVENUE)).fetchall()
            recent: Any = await (await conn.execute(RECENT_CLAIMS)).fetchone()
            outbox: Any = await (await conn.execute(OUTBOX)).fetchone()
            dead: Any = await (await conn.execute(DEAD_LETTERS)).fetchone()
            totals = await (await conn.execute(OPEN_TOTALS)).fetchall()
            channels = await (await conn.execute(OPEN_CHANNELS, (OPEN_CHANNELS_SHOWN,))).fetchall()
    return PaymentFigures(
        revenue=[Revenue(*row) for row in revenue],
        claims_last_minute=recent[0],
        claims_per_second=recent[1] / 10,
        outbox_backlog=outbox[0],
        outbox_oldest_seconds=outbox[1],
        outbox_failing=outbox[2],
        dead_letters=dead[0],
        open_totals=[OpenChannels(*row) for row in totals],
        open_channels=[Channel(*row) for row in channels],
    )
