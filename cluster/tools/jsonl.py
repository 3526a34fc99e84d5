"""`relay-cluster export` and `relay-cluster import`: events as JSON lines (NDJSON), one event
per line, gzip-compressed when the file name ends in `.gz`.

Import verifies every event (id and signature) and stores them through the same batch save as
the relay (cluster/store/writer.py), so NIP-01 replacement, NIP-09 deletions and NIP-62 requests
to vanish hold exactly as if the events had been published; nothing is charged (it is an
operator's tool, not a client). Re-running an import is harmless: events already stored are
counted as duplicates. Lines that are not valid events are counted and reported, not stored.
"""

from __future__ import annotations

import gzip
import io
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import msgspec

from cluster.config import DatabaseSettings
from cluster.nostr.event import Event, encode_event, event_from_json, verify
from cluster.nostr.filters import Filter
from cluster.store.export import exported_rows
from cluster.store.pool import create_write_pool
from cluster.store.writer import PostgresBatchSaver, SaveRequest

IMPORT_BATCH = 500


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


Problem = Callable[[int, str], None]
"""Told the line number and the reason of each line that is not stored as an event."""

MAX_REPORTED = 100
"""Lines reported one by one; past this many only the counts go on (a huge bad file)."""


def report_to_stderr(line: int, reason: str) -> None:
    print(f"line {line}: {reason}", file=sys.stderr)


def _events(lines: IO[str], outcomes: Counter[str], problem: Problem) -> Iterator[Event]:
    """Every line that is a verified event; the others are counted, reported and skipped."""
    reported = 0
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            event = event_from_json(text)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            outcomes["not an event"] += 1
            reason = f"not an event: {exc}"
        else:
            rejection = verify(event)
            if rejection is None:
                yield event
                continue
            outcomes["invalid"] += 1
            reason = rejection.text
        reported += 1
        if reported <= MAX_REPORTED:
            problem(number, reason)
        elif reported == MAX_REPORTED + 1:
            problem(number, f"more than {MAX_REPORTED} bad lines: only counting from here")


async def _batches(events: Iterator[Event], size: int) -> AsyncIterator[list[SaveRequest]]:
    batch: list[SaveRequest] = []
    for event in events:
        batch.append(SaveRequest(event, encode_event(event).decode()))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


async def import_events(
    settings: DatabaseSettings,
    source: str,
    batch: int = IMPORT_BATCH,
    *,
    problem: Problem = report_to_stderr,
    progress: Callable[[dict[str, int]], None] | None = None,
) -> dict[str, int]:
    """Verify and store every event of `source`; returns the count of each outcome. A bad
    line is reported (`problem`) and skipped, never the end of the import; `progress` gets
    the counts so far after each batch."""
    outcomes: Counter[str] = Counter()
    pool = create_write_pool(settings, size=1, name="relay-import")
    await pool.open()
    try:
        saver = PostgresBatchSaver(pool)
        with _text_file(source, "r") as handle:
            async for requests in _batches(_events(handle, outcomes, problem), batch):
                outcomes.update(str(outcome) for outcome in await saver.save_many(requests))
                if progress is not None:
                    progress(dict(outcomes))
    finally:
        await pool.close()
    return dict(sorted(outcomes.items()))
