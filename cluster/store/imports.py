"""Bulk save of plain events for `relay-cluster import`: COPY into a staging table, then one
set-based INSERT ... SELECT, in one transaction.

Plain events are what functions/055_save_plain_events.sql calls plain: regular kinds (not a
NIP-09 deletion, not a NIP-62 request naming this relay), unpaid, so no address to replace and
nothing to charge. This is the same three steps as relay_save_plain_events, with the same
rules: the advisory lock of every id (relay_lock_key, in key order, so neither a live batch nor
a deletion can race the insert), then, in a new statement (a new snapshot, taken after the
locks were granted), the insert of the first copy of each id that is neither stored, deleted by
its author (NIP-09) nor vanished (NIP-62). The outcome of each row follows the same CASE.

Why not `SELECT relay_save_events(%s::json)` as the relay does: there the batch is one JSON
text that PostgreSQL parses into composite rows, and each row's `raw` is JSON escaped inside
JSON; for an import that parse, not the insert, was most of the database's time. COPY sends the
columns already typed, in one stream per batch. Measured in docs/OPERATIONS.md (Export and
import). The events table's triggers (tag index, archive tier, search) fire for this INSERT as
for the relay's, once per statement.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

PlainRow = tuple[str, bytes]
"""(event id in hex, its line of COPY text from `copy_line`): one plain event."""

STAGING_TABLE = "relay_import_rows"

CREATE_STAGING = f"""
CREATE TEMP TABLE IF NOT EXISTS {STAGING_TABLE} (
    line bigint NOT NULL, id bytea NOT NULL, pubkey bytea NOT NULL, created_at bigint NOT NULL,
    kind integer NOT NULL, expires_at bigint, tagvalues text[] NOT NULL, raw text NOT NULL
) ON COMMIT DELETE ROWS
"""
"""Per session (temp), emptied by every commit: a batch never sees another batch's rows."""

COPY_STAGING = (
    f"COPY {STAGING_TABLE} (line, id, pubkey, created_at, kind, expires_at, tagvalues, raw)"
    " FROM STDIN"
)

NO_JIT = "SET LOCAL jit = off"

LOCK_STAGED = f"""
SELECT count(pg_advisory_xact_lock(k)) FROM (
    SELECT DISTINCT relay_lock_key(encode(id, 'hex')) AS k FROM {STAGING_TABLE} ORDER BY 1
) AS keys
"""

# One statement: the INSERT's rows are invisible to the outer SELECT (same snapshot), so a row
# that was not inserted is judged on what was there before, exactly like step 3 of
# relay_save_plain_events judges it after step 2 (a later copy of an id inserted now falls
# through to 'duplicate', as it does there).
INSERT_STAGED = f"""
WITH staged AS (
    SELECT s.*, row_number() OVER (PARTITION BY s.id ORDER BY s.line) AS nth
    FROM {STAGING_TABLE} s
), inserted AS (
    INSERT INTO events (id, pubkey, created_at, kind, expires_at, tagvalues, raw)
    SELECT f.id, f.pubkey, f.created_at, f.kind, f.expires_at, f.tagvalues, f.raw
    FROM staged f
    WHERE f.nth = 1
      AND NOT EXISTS (
        SELECT 1 FROM deletions d WHERE d.target = encode(f.id, 'hex') AND d.pubkey = f.pubkey)
      AND NOT EXISTS (
        SELECT 1 FROM vanished v WHERE v.pubkey = f.pubkey AND v.until >= f.created_at)
    ORDER BY f.line
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
SELECT outcome, count(*) FROM (
    SELECT CASE
        WHEN t.nth = 1 AND i.id IS NOT NULL THEN 'stored'
        WHEN EXISTS (SELECT 1 FROM events e WHERE e.id = t.id) THEN 'duplicate'
        WHEN EXISTS (SELECT 1 FROM deletions d
                     WHERE d.target = encode(t.id, 'hex') AND d.pubkey = t.pubkey) THEN 'deleted'
        WHEN EXISTS (SELECT 1 FROM vanished v
                     WHERE v.pubkey = t.pubkey AND v.until >= t.created_at) THEN 'vanished'
        ELSE 'duplicate'
    END AS outcome
    FROM staged t LEFT JOIN inserted i ON i.id = t.id AND t.nth = 1
) AS outcomes
GROUP BY outcome
"""


def _copy_text(value: str) -> str:
    """A text field of COPY's text format: backslash is its escape, tab and newline its
    separators (NUL cannot occur: callers pass `pg_text` values and JSON)."""
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if "\n" in value or "\t" in value or "\r" in value:
        value = value.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    return value


def _array_literal(values: Sequence[str]) -> str:
    """A text[] literal: every element quoted, its backslashes and quotes escaped."""
    quoted = (value.replace("\\", "\\\\").replace('"', '\\"') for value in values)
    return "{" + ",".join(f'"{value}"' for value in quoted) + "}"


def copy_line(
    line: int, event_id: str, pubkey: str, created_at: int, kind: int,
    expires_at: int | None, tagvalues: Sequence[str], raw: str,
) -> bytes:  # fmt: skip
    """One row of the staging table in COPY text format, ready to send as it is: formatted
    where the events are verified (cluster/tools/import_check.py, in worker processes), so
    the process that talks to PostgreSQL only joins bytes (psycopg's per-row `write_row` was
    a fifth of its CPU). `event_id` and `pubkey` are lowercase hex (bytea input `\\x...`)."""
    expires = "\\N" if expires_at is None else str(expires_at)
    fields = (str(line), f"\\\\x{event_id}", f"\\\\x{pubkey}", str(created_at), str(kind),
              expires, _copy_text(_array_literal(tagvalues)), _copy_text(raw))  # fmt: skip
    return ("\t".join(fields) + "\n").encode()


async def create_staging(conn: AsyncConnection[Any]) -> None:
    """The staging table of this session (once per connection, before save_plain_rows)."""
    await conn.execute(CREATE_STAGING)


async def save_plain_rows(conn: AsyncConnection[Any], rows: Sequence[PlainRow]) -> Counter[str]:
    """Store `rows` (plain events, see above) in one transaction; the count of each outcome
    (stored, duplicate, deleted, vanished). `conn` is an autocommit connection: the
    transaction here is explicit, so the staged rows live exactly as long as it does (the
    connection must have run create_staging)."""
    outcomes: Counter[str] = Counter()
    if not rows:
        return outcomes
    async with conn.transaction(), conn.cursor() as cursor:
        # The planner prices the EXISTS probes of `events` as scans of the whole table and
        # would JIT-compile the statement: 60 ms of a 1,000-row batch's 150 (EXPLAIN ANALYZE).
        await cursor.execute(NO_JIT)
        async with cursor.copy(COPY_STAGING) as copy:
            await copy.write(b"".join(text for _, text in rows))
        await cursor.execute(LOCK_STAGED)
        await cursor.execute(INSERT_STAGED)
        for outcome, count in await cursor.fetchall():
            outcomes[str(outcome)] += int(count)
    return outcomes
