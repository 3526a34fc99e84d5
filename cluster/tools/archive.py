"""`relay-cluster archive`: move the events past their kind's horizon to the archive tier now.

The same batches as the relay's scheduled runner (cluster/store/archive.py), under the same
cluster-wide lock, so running it by hand while the cluster runs never moves a batch twice; it
waits for a running round to finish rather than skipping, since the operator asked for a run.
"""

from __future__ import annotations

import psycopg

from cluster.config import ArchiveSettings
from cluster.store.archive import ARCHIVE_LOCK_KEY, archive_now


async def run_archive(database_url: str, settings: ArchiveSettings) -> dict[int, int]:
    """Events moved per archived kind (empty when archive.horizons is empty)."""
    if not settings.horizons:
        return {}
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (ARCHIVE_LOCK_KEY,))
        try:
            return await archive_now(conn, settings.kind_horizons, settings.batch_size)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (ARCHIVE_LOCK_KEY,))
