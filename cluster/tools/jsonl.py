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
from collections.abc import AsyncIterator, Iterator
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
def _text_file(path: str, mode: str) -> Iterator[IO[str]]:
    """`-` is stdin/stdout; `*.gz` is gzip; anything else a plain UTF-8 file."""
    if path == "-":
        yield sys.stdout if "w" in mode else sys.stdin
    elif path.endswith(".gz"):
        with (
            gzip.GzipFile(path, mode + "b") as raw,
            io.TextIOWrapper(raw, encoding="utf-8") as handle,
        ):
            yield handle
    else:
        with Path(path).open(mode, encoding="utf-8") as handle:
            yield handle


async def export_events(database_url: str, flt: Filter, output: str) -> int:
    """Write every stored event matching `flt` to `output`; returns how many."""
    written = 0
    with _text_file(output, "w") as handle:
        async for raw in exported_rows(database_url, flt):
            handle.write(raw)
            handle.write("\n")
            written += 1
    return written


def _events(lines: IO[str], outcomes: Counter[str]) -> Iterator[Event]:
    for line in lines:
        text = line.strip()
        if not text:
            continue
        try:
            event = event_from_json(text)
        except (msgspec.DecodeError, msgspec.ValidationError):
            outcomes["not an event"] += 1
            continue
        if verify(event) is not None:
            outcomes["invalid"] += 1
            continue
        yield event


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
    settings: DatabaseSettings, source: str, batch: int = IMPORT_BATCH
) -> dict[str, int]:
    """Verify and store every event of `source`; returns the count of each outcome."""
    outcomes: Counter[str] = Counter()
    pool = create_write_pool(settings, size=1, name="relay-import")
    await pool.open()
    try:
        saver = PostgresBatchSaver(pool)
        with _text_file(source, "r") as handle:
            async for requests in _batches(_events(handle, outcomes), batch):
                outcomes.update(str(outcome) for outcome in await saver.save_many(requests))
    finally:
        await pool.close()
    return dict(sorted(outcomes.items()))
