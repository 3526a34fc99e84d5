"""`relay-cluster export` and `relay-cluster import`: events as JSON lines (NDJSON), one event
per line, gzip-compressed when the file name ends in `.gz`.

Import reads the input in chunks of CHUNK_LINES lines and has worker processes decode and
verify them (id and signature, cluster/tools/import_check.py), reading the answers back in
input order with a bounded number in flight: constant memory, and the BIP-340 checks of one
chunk run while the previous one is written. What to write is then kept in a `_Segment` and
written in two parts, in one order:
1. events on the relay's own path, in input order: replaceable and addressable kinds and NIP-09
   deletions through the relay's batch save (cluster/store/writer.py, `relay_save_events`);
2. plain (regular) events, set-based: COPY plus one INSERT ... SELECT (cluster/store/imports.py).
Nothing in part 1 can depend on an earlier plain event of the segment, and what a plain event
depends on (a deletion of it, a request to vanish) is written before it; a deletion that targets
an event of the pending segment, and every NIP-62 request naming this relay, first writes the
segment out (a barrier), so each event meets the state it would have met had the lines been
published one by one. NIP-01 replacement, NIP-09 and NIP-62 therefore hold as on the relay;
nothing is charged (an operator's tool, not a client); ephemeral kinds are counted, not stored.
Re-running an import is harmless: stored events count as duplicates. Lines that are not valid
events are counted and reported with their numbers, never the end of the import.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import itertools
import os
import sys
from collections import Counter, deque
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import aclosing, contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import IO, Any

import msgspec
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from cluster.config import DatabaseSettings
from cluster.nostr.filters import Filter
from cluster.store.export import exported_rows
from cluster.store.imports import PlainRow, create_staging, save_plain_rows
from cluster.store.pool import create_write_pool
from cluster.store.text import pg_text
from cluster.store.vanish import VANISH_TIMEOUT_MS, apply_vanish
from cluster.store.writer import PostgresBatchSaver, SaveRequest
from cluster.tools.import_check import CheckedChunk, ChunkJob, Item, Role, Special, check_chunk


@contextmanager
def _text_file(path: str, mode: str, *, compress: bool = False) -> Iterator[IO[str]]:
    """`-` is stdin/stdout; `*.gz` (or `compress`) is gzip; anything else a plain UTF-8 file."""
    if path == "-" and compress:
        with (
            gzip.GzipFile(fileobj=sys.stdout.buffer, mode="wb") as raw,
            io.TextIOWrapper(raw, encoding="utf-8") as handle,
        ):
            yield handle
    elif path == "-":
        yield sys.stdout if "w" in mode else sys.stdin
    elif path.endswith(".gz") or compress:
        with (
            gzip.GzipFile(path, mode + "b") as raw,
            io.TextIOWrapper(raw, encoding="utf-8") as handle,
        ):
            yield handle
    else:
        with Path(path).open(mode, encoding="utf-8") as handle:
            yield handle


async def export_events(
    database_url: str, flt: Filter, output: str, *, archive: bool = False
) -> int:
    """Write every stored event matching `flt` to `output`; returns how many. `archive`: the
    archive tier's events instead (cluster/store/archive.py), always gzip-compressed."""
    written = 0
    with _text_file(output, "w", compress=archive) as handle:
        async for raw in exported_rows(database_url, flt, archive=archive):
            handle.write(raw)
            handle.write("\n")
            written += 1
    return written


CHUNK_LINES = 2_000
"""Lines per task of a verifying process: big enough that handing it over (one pickle each
way) costs little next to its ~75 ms of checks, small enough to keep a few in flight."""
IMPORT_BATCH = 1_000
"""Events per transaction: plain ones per COPY, the others per `relay_save_events` call. Each
plain row takes one advisory lock until its commit; 1,000 stay well inside the lock table."""
IN_FLIGHT_PER_PROCESS = 2
"""Chunks queued per verifying process: one being checked, one ready (the memory bound)."""

DISCARD_PLANS = "DISCARD PLANS"
REPLAN_FIRST = 2_000
"""After 2,000, 4,000, 8,000... events written, both sessions drop their cached plans. A plan
made when the tables were small stays cached for the session: the tag-removal trigger's
(functions/080) then walked the whole event_tags index for each replaced event, 15-19 ms each
once an import into an empty database had passed 50,000 events (auto_explain), where a fresh
plan takes 0.3 ms. Doubling keeps it to a dozen replans for millions of events."""

ProblemReporter = Callable[[int, str], None]
"""Told the line number and the reason of each line that is not stored as an event."""

MAX_REPORTED = 100
"""Lines reported one by one; past this many only the counts go on (a huge bad file)."""


def report_to_stderr(line: int, reason: str) -> None:
    print(f"line {line}: {reason}", file=sys.stderr)


@contextmanager
def _binary_input(path: str) -> Iterator[Iterable[bytes]]:
    """Import reads bytes: msgspec decodes UTF-8 itself, and a line that is not UTF-8 is then
    one bad line ("not an event"), not a decoding error that would end the import."""
    if path == "-":
        yield sys.stdin.buffer
    elif path.endswith(".gz"):
        with gzip.open(path, "rb") as handle:
            yield handle
    else:
        with Path(path).open("rb") as handle:
            yield handle


def _line_chunks(
    lines: Iterable[bytes], size: int, our_urls: tuple[str, ...]
) -> Iterator[ChunkJob]:
    numbered = iter(lines)
    first = 1
    while chunk := list(itertools.islice(numbered, size)):
        yield first, chunk, our_urls
        first += len(chunk)


async def _checked_chunks(
    jobs: Iterator[ChunkJob], processes: int
) -> AsyncGenerator[CheckedChunk, None]:
    """check_chunk of every job, in order: in `processes` worker processes, at most
    IN_FLIGHT_PER_PROCESS chunks each ahead of the reader; inline for a single chunk (a process
    pool's start-up would cost more than the checks) or when `processes` is 1."""
    head = list(itertools.islice(jobs, 2))
    if processes <= 1 or len(head) < 2:
        for job in itertools.chain(head, jobs):
            yield check_chunk(job)
        return
    loop = asyncio.get_running_loop()
    ahead: deque[asyncio.Future[CheckedChunk]] = deque()
    # spawn, not fork: the parent has an event loop and open connections a fork would copy.
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        try:
            for job in itertools.chain(head, jobs):
                ahead.append(loop.run_in_executor(pool, check_chunk, job))
                if len(ahead) >= processes * IN_FLIGHT_PER_PROCESS:
                    yield await ahead.popleft()
            while ahead:
                yield await ahead.popleft()
        finally:
            for future in ahead:
                future.cancel()


class _Segment:
    """Events read but not yet written, in the two parts the module docstring describes, with
    the ids and addresses they hold (what a later deletion must not overtake)."""

    def __init__(self) -> None:
        self.ordered: list[SaveRequest] = []
        self.plain: list[PlainRow] = []
        self.ids: set[str] = set()
        self.addresses: set[str] = set()

    def touched_by(self, deletion: Special) -> bool:
        return not (self.ids.isdisjoint(deletion.target_ids)
                    and self.addresses.isdisjoint(deletion.target_addresses))  # fmt: skip


class _Writer:
    """Writes segments through `pool` (autocommit; one connection held for the plain COPY, so
    its staging table is created once) and counts the outcomes."""

    def __init__(self, pool: AsyncConnectionPool, conn: AsyncConnection[Any], batch: int) -> None:
        self._pool = pool
        self._conn = conn
        self._saver = PostgresBatchSaver(pool)
        self._batch = batch
        self.segment = _Segment()
        self.outcomes: Counter[str] = Counter()
        self._written = 0
        self._replan_at = REPLAN_FIRST

    async def add(self, item: Item) -> None:
        segment = self.segment
        if isinstance(item, tuple):
            segment.plain.append(item)
            segment.ids.add(item[0])
            if len(segment.plain) >= self._batch:
                await self.flush()
            return
        if item.role is Role.VANISH:
            await self.flush()
            await apply_vanish(self._pool, item.event, item.raw)
            self.outcomes["vanish applied"] += 1
            return
        if item.role is Role.DELETION and segment.touched_by(item):
            await self.flush()
            segment = self.segment
        segment.ordered.append(SaveRequest(item.event, item.raw))
        segment.ids.add(item.event.id)
        address = item.event.address
        if address is not None:
            segment.addresses.add(pg_text(address))
        if len(segment.ordered) >= self._batch:
            await self.flush()

    async def flush(self) -> None:
        segment, self.segment = self.segment, _Segment()
        for start in range(0, len(segment.ordered), self._batch):
            saved = await self._saver.save_many(segment.ordered[start : start + self._batch])
            self.outcomes.update(str(outcome) for outcome in saved)
        self.outcomes.update(await save_plain_rows(self._conn, segment.plain))
        self._written += len(segment.ordered) + len(segment.plain)
        if self._written >= self._replan_at:
            self._replan_at *= 2
            await self._conn.execute(DISCARD_PLANS)
            async with self._pool.connection() as conn:  # the one the batch save uses
                await conn.execute(DISCARD_PLANS)


async def import_events(
    settings: DatabaseSettings,
    source: str,
    batch: int = IMPORT_BATCH,
    *,
    problem: ProblemReporter = report_to_stderr,
    progress: Callable[[dict[str, int]], None] | None = None,
    our_urls: Sequence[str] = (),
    processes: int = 0,
    chunk_lines: int = CHUNK_LINES,
) -> dict[str, int]:
    """Verify and store every event of `source`; returns the count of each outcome. A bad
    line is reported (`problem`) and skipped, never the end of the import; `progress` gets
    the counts so far after each chunk. `our_urls`: this relay's URLs, for NIP-62 requests
    that name it; `processes`: verifying processes (0: one per core)."""
    processes = processes or os.cpu_count() or 1
    reported = 0
    # A request to vanish may delete many rows in one statement: the relay gives it
    # VANISH_TIMEOUT_MS, so the import's statements get at least as long (no client waits).
    timeout = max(settings.write_timeout_ms, VANISH_TIMEOUT_MS)
    settings = msgspec.structs.replace(settings, write_timeout_ms=timeout)
    pool = create_write_pool(settings, size=2, name="relay-import")
    await pool.open()
    try:
        async with pool.connection() as conn:
            await create_staging(conn)
            writer = _Writer(pool, conn, max(1, batch))
            with _binary_input(source) as handle:
                jobs = _line_chunks(handle, chunk_lines, tuple(our_urls))
                async with aclosing(_checked_chunks(jobs, processes)) as chunks:
                    async for chunk in chunks:
                        for bad in chunk.problems:
                            writer.outcomes[bad.outcome] += 1
                            reported += 1
                            if reported <= MAX_REPORTED:
                                problem(bad.line, bad.reason)
                            elif reported == MAX_REPORTED + 1:
                                problem(bad.line, f"more than {MAX_REPORTED} bad lines:"
                                        " only counting from here")  # fmt: skip
                        if chunk.ephemeral:
                            writer.outcomes["ephemeral"] += chunk.ephemeral
                        for item in chunk.items:
                            await writer.add(item)
                        if progress is not None:
                            progress(dict(writer.outcomes))
            await writer.flush()
    finally:
        await pool.close()
    if progress is not None:
        progress(dict(writer.outcomes))
    return dict(sorted(writer.outcomes.items()))
