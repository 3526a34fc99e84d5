"""`relay-cluster sync`, `stream`, `export`, `import`, `archive`: moving events in and out."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

from cluster.cli.common import load_for, load_with_database
from cluster.config import ConfigError, Settings


def cmd_sync(args: argparse.Namespace) -> int:
    """NIP-77 sync with a remote relay (cluster/tools/sync.py, docs/SYNC.md)."""
    from cluster.tools.sync import SyncError, parse_filter_argument, print_progress, run_sync

    settings = load_with_database(args)
    local_url = args.local or os.environ.get("RELAY_URL") or settings.relay_url
    try:
        report = asyncio.run(
            run_sync(
                remote_url=args.relay,
                local_url=local_url,
                database_url=settings.database.url,
                flt=parse_filter_argument(args.filter),
                direction=args.direction,
                batch=args.batch,
                progress=print_progress,
            )
        )
    except SyncError as exc:
        print(f"relay-cluster sync: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"downloaded": report.downloaded, "uploaded": report.uploaded}))
    return 0


def add_sync_command(commands: Any) -> None:
    sync = commands.add_parser("sync", help="NIP-77: exchange missing events with a relay")
    sync.add_argument("--relay", required=True, help="the remote relay (ws:// or wss://)")
    sync.add_argument("--filter", default="{}", help="one NIP-01 filter as JSON (default: all)")
    sync.add_argument("--direction", choices=["down", "up", "both"], default="both")
    sync.add_argument("--local", help="this cluster's URL (default: $RELAY_URL, else config)")
    sync.add_argument("--batch", type=int, default=100, help="events per REQ / upload batch")
    sync.set_defaults(func=cmd_sync)


def _database_settings(args: argparse.Namespace) -> Settings:
    settings = load_with_database(args)
    return settings


def cmd_export(args: argparse.Namespace) -> int:
    """Stored events as JSON lines (cluster/tools/jsonl.py)."""
    from cluster.nostr.filters import FilterError, FilterLimits, parse_filter
    from cluster.tools.jsonl import export_events

    settings = load_with_database(args)
    try:
        flt = parse_filter(json.loads(args.filter), FilterLimits(max_values=1_000_000))
    except (ValueError, FilterError) as exc:
        raise ConfigError(f"--filter: {exc}") from exc
    written = asyncio.run(
        export_events(settings.database.url, flt, args.output, archive=args.archive)
    )
    print(json.dumps({"exported": written}), file=sys.stderr)
    return 0


def cmd_archive(args: argparse.Namespace) -> int:
    """Move events past their kind's horizon to the archive now (cluster/tools/archive.py)."""
    from cluster.tools.archive import run_archive

    settings = load_with_database(args)
    moved = asyncio.run(run_archive(settings.database.url, settings.archive))
    print(json.dumps({"archived": {str(kind): count for kind, count in moved.items()}}))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Verify and store JSON-lines events (cluster/tools/jsonl.py)."""
    from cluster.tools.jsonl import import_events

    settings = load_with_database(args)
    # NIP-62 requests naming this relay are applied, as the relay applies them.
    our_urls = [settings.relay_url]
    started = time.monotonic()
    live = sys.stderr.isatty()  # a progress bar on a terminal; a line per 10,000 otherwise
    shown = [0]

    def progress(counts: dict[str, int]) -> None:
        done = sum(counts.values())
        if not live and done - shown[0] < 10_000:
            return
        shown[0] = done
        rate = done / max(time.monotonic() - started, 1e-6)
        line = f"imported {done:,} lines ({rate:,.0f}/s) {counts}"
        print(f"\r{line}" if live else line, end="" if live else "\n", file=sys.stderr)

    outcomes = asyncio.run(
        import_events(
            settings.database,
            args.source,
            args.batch,
            progress=progress,
            our_urls=our_urls,
            processes=args.processes,
        )
    )
    if live:
        print(file=sys.stderr)
    print(json.dumps(outcomes))
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    """Mirror an upstream relay live into this cluster (cluster/tools/stream.py)."""
    from cluster.tools.stream import run_stream
    from cluster.tools.sync import SyncError, parse_filter_argument, print_progress

    settings = load_for(args)
    local_url = args.local or os.environ.get("RELAY_URL") or settings.relay_url
    try:
        flt = parse_filter_argument(args.filter)
    except SyncError as exc:
        raise ConfigError(str(exc)) from exc
    try:
        asyncio.run(
            run_stream(
                upstream_url=args.relay, local_url=local_url, flt=flt, progress=print_progress
            )
        )
    except KeyboardInterrupt:
        return 0
    return 0


def add_jsonl_commands(commands: Any) -> None:
    stream = commands.add_parser("stream", help="follow a relay live and store what it sends")
    stream.add_argument("--relay", required=True, help="the upstream relay (ws:// or wss://)")
    stream.add_argument("--filter", default="{}", help="one NIP-01 filter as JSON (default: all)")
    stream.add_argument("--local", help="this cluster's URL (default: $RELAY_URL, else config)")
    stream.set_defaults(func=cmd_stream)
    export = commands.add_parser("export", help="write stored events as JSON lines (.gz: gzip)")
    export.add_argument("--filter", default="{}", help="one NIP-01 filter as JSON (limit ignored)")
    export.add_argument("--output", default="-", help="file (*.gz compressed) or - for stdout")
    export.add_argument(
        "--archive", action="store_true", help="the archive tier's events, gzip-compressed"
    )
    export.set_defaults(func=cmd_export)
    archive = commands.add_parser("archive", help="move events past their horizon to the archive")
    archive.set_defaults(func=cmd_archive)
    importing = commands.add_parser("import", help="verify and store events from JSON lines")
    importing.add_argument(
        "source", nargs="?", default="-", help="file (*.gz compressed), or - / nothing: stdin"
    )
    importing.add_argument("--batch", type=int, default=1000, help="events per transaction")
    importing.add_argument(
        "--processes", type=int, default=0, help="verifying processes (default: one per core)"
    )
    importing.set_defaults(func=cmd_import)
