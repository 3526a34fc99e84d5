"""`relay-cluster`: serve, migrate, up (a whole local cluster)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from cluster.config import ConfigError, Settings, load_settings
from cluster.store.migrations import apply_migrations


def _network_overrides(args: argparse.Namespace) -> dict[str, Any]:
    network = {
        key: getattr(args, key)
        for key in ("host", "port", "workers")
        if getattr(args, key, None) is not None
    }
    return {"network": network} if network else {}


def _load(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, overrides=_network_overrides(args))


def _require_services(settings: Settings) -> None:
    if not settings.database.url:
        raise ConfigError("database.url is not set: export DATABASE_URL=postgresql://...")
    if not settings.redis.url:
        raise ConfigError("redis.url is not set: export REDIS_URL=redis://...")


def _prepare_metrics_dir(port: int) -> None:
    """gunicorn's workers share metrics through files (prometheus multiprocess mode); the
    directory must exist and be empty before any metric is created, i.e. before forking."""
    existing = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    path = Path(existing) if existing else Path(tempfile.gettempdir()) / f"relay-metrics-{port}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _load(args)
    _prepare_metrics_dir(settings.network.port)
    from cluster.relay.server import serve

    _require_services(settings)
    applied = asyncio.run(apply_migrations(settings.database.url))
    if applied:
        print(f"applied migrations {applied}", flush=True)
    serve(settings)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _load(args)
    if not settings.database.url:
        raise ConfigError("database.url is not set: export DATABASE_URL=postgresql://...")
    applied = asyncio.run(apply_migrations(settings.database.url))
    print(f"applied migrations {applied}" if applied else "database is up to date")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from cluster.services.local_cluster import run_local_cluster
    from cluster.services.shape import choose_shape, usable_cores

    shape = choose_shape(args.instances, args.workers)
    print(f"shape: {shape} ({usable_cores()} cores; --instances/--workers to change)", flush=True)
    return run_local_cluster(
        config=args.config,
        instances=shape.instances,
        workers=shape.workers,
        port=args.port,
        data_dir=args.data_dir,
    )


def cmd_ledger(args: argparse.Namespace) -> int:
    from cluster.ledger.server import LedgerConfigError, ledger_config_from_env, run_ledger

    try:
        database_url, token = ledger_config_from_env(database_url=args.database_url)
    except LedgerConfigError as exc:
        raise ConfigError(str(exc)) from exc
    run_ledger(args.host, args.port, database_url, token)
    return 0


def cmd_channel(args: argparse.Namespace) -> int:
    from cluster.tools import payments

    if args.action == "open":
        text = asyncio.run(
            payments.open_channel(
                args.sender_pubkey, args.secret, args.capacity, args.currency, args.expires_in
            )
        )
    elif args.action == "state":
        text = asyncio.run(payments.channel_state(args.channel_id))
    elif args.action == "close":
        text = asyncio.run(payments.close_channel(args.channel_id))
    else:
        text = payments.signed_tag(
            args.secret, args.channel, args.amount, args.nonce, args.currency
        )
    print(text)
    return 0


def cmd_pricing(args: argparse.Namespace) -> int:
    from cluster.tools.payments import set_price

    settings = _load(args)
    if not settings.database.url:
        raise ConfigError("database.url is not set: export DATABASE_URL=postgresql://...")
    sats = None if args.action == "unset" else args.sats
    print(asyncio.run(set_price(settings.database.url, args.kind, sats)))
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from cluster.tools.publish import publish

    payment = None
    if args.pay_channel:
        payment = (args.pay_channel, args.pay_amount, args.pay_nonce, args.pay_currency)
    tags = [list(tag.split(",")) for tag in args.tag]
    accepted, message = asyncio.run(
        publish(args.relay, args.secret, args.kind, args.content, tags, payment)
    )
    print(message)
    return 0 if accepted else 1


def cmd_admin(args: argparse.Namespace) -> int:
    """NIP-86: one management call, NIP-98 signed; prints the JSON-RPC answer."""
    from cluster.tools.admin import call

    status, answer = asyncio.run(call(args.relay, args.secret, args.method, list(args.params)))
    print(json.dumps(answer))
    return 0 if status == 200 and not answer.get("error") else 1


def cmd_env(args: argparse.Namespace) -> int:
    """Print `export` lines for the services of a running `up`, for `eval "$(...)"`."""
    data_dir = Path(args.data_dir)
    try:
        state = json.loads((data_dir / "cluster.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"no running cluster in {data_dir} (start one with `make up`)") from exc
    urls = {row["name"]: row["url"] for row in state.get("services", [])}
    exports = {
        "RELAY_URL": state.get("url") or "",
        "DATABASE_URL": urls.get("postgres", ""),
        "REDIS_URL": urls.get("redis", ""),
        "DASSIE_RPC_URL": urls.get("ledger", ""),
    }
    token = data_dir / "ledger.token"
    if token.exists():
        exports["DASSIE_RPC_TOKEN"] = token.read_text().strip()
    for name, value in exports.items():
        if value and "*" not in value:  # masked URLs (external services) are not exported
            print(f"export {name}={shlex.quote(value)}")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    """NIP-77 sync with a remote relay (cluster/tools/sync.py, docs/SYNC.md)."""
    from cluster.tools.sync import SyncError, parse_filter_argument, print_progress, run_sync

    settings = _load(args)
    if not settings.database.url:
        raise ConfigError("database.url is not set: export DATABASE_URL=postgresql://...")
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


def _add_sync_command(commands: Any) -> None:
    sync = commands.add_parser("sync", help="NIP-77: exchange missing events with a relay")
    sync.add_argument("--relay", required=True, help="the remote relay (ws:// or wss://)")
    sync.add_argument("--filter", default="{}", help="one NIP-01 filter as JSON (default: all)")
    sync.add_argument("--direction", choices=["down", "up", "both"], default="both")
    sync.add_argument("--local", help="this cluster's URL (default: $RELAY_URL, else config)")
    sync.add_argument("--batch", type=int, default=100, help="events per REQ / upload batch")
    sync.set_defaults(func=cmd_sync)


def _database_settings(args: argparse.Namespace) -> Settings:
    settings = _load(args)
    if not settings.database.url:
        raise ConfigError("database.url is not set: export DATABASE_URL=postgresql://...")
    return settings


def cmd_export(args: argparse.Namespace) -> int:
    """Stored events as JSON lines (cluster/tools/jsonl.py)."""
    from cluster.nostr.filters import FilterError, FilterLimits, parse_filter
    from cluster.tools.jsonl import export_events

    settings = _database_settings(args)
    try:
        flt = parse_filter(json.loads(args.filter), FilterLimits(max_values=1_000_000))
    except (ValueError, FilterError) as exc:
        raise ConfigError(f"--filter: {exc}") from exc
    written = asyncio.run(export_events(settings.database.url, flt, args.output))
    print(json.dumps({"exported": written}), file=sys.stderr)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Verify and store JSON-lines events (cluster/tools/jsonl.py)."""
    from cluster.tools.jsonl import import_events

    settings = _database_settings(args)
    outcomes = asyncio.run(import_events(settings.database, args.source, args.batch))
    print(json.dumps(outcomes))
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    """Mirror an upstream relay live into this cluster (cluster/tools/stream.py)."""
    from cluster.tools.stream import run_stream
    from cluster.tools.sync import SyncError, parse_filter_argument, print_progress

    settings = _load(args)
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


def _add_jsonl_commands(commands: Any) -> None:
    stream = commands.add_parser("stream", help="follow a relay live and store what it sends")
    stream.add_argument("--relay", required=True, help="the upstream relay (ws:// or wss://)")
    stream.add_argument("--filter", default="{}", help="one NIP-01 filter as JSON (default: all)")
    stream.add_argument("--local", help="this cluster's URL (default: $RELAY_URL, else config)")
    stream.set_defaults(func=cmd_stream)
    export = commands.add_parser("export", help="write stored events as JSON lines (.gz: gzip)")
    export.add_argument("--filter", default="{}", help="one NIP-01 filter as JSON (limit ignored)")
    export.add_argument("--output", default="-", help="file (*.gz compressed) or - for stdout")
    export.set_defaults(func=cmd_export)
    importing = commands.add_parser("import", help="verify and store events from JSON lines")
    importing.add_argument("source", help="file (*.gz compressed) or - for stdin")
    importing.add_argument("--batch", type=int, default=500, help="events per transaction")
    importing.set_defaults(func=cmd_import)


def _add_payment_commands(commands: Any) -> None:
    ledger = commands.add_parser("ledger", help="run the Dassie-compatible ledger node")
    ledger.add_argument("--host", default="127.0.0.1")
    ledger.add_argument("--port", type=int, default=5000)
    ledger.add_argument("--database-url", help="default: $LEDGER_DATABASE_URL or $DATABASE_URL")
    ledger.set_defaults(func=cmd_ledger)

    channel = commands.add_parser("channel", help="payment channels on DASSIE_RPC_URL")
    actions = channel.add_subparsers(dest="action", required=True)
    opening = actions.add_parser("open", help="open a development channel; prints its id last")
    opening.add_argument("--sender-pubkey", help="compressed secp256k1 key (66 hex)")
    opening.add_argument("--secret", help="or the sender's secret key (64 hex)")
    opening.add_argument("--capacity", type=int, required=True, help="sats")
    opening.add_argument("--currency", default="BTC", choices=["BTC", "BASE", "AKT", "XRP"])
    opening.add_argument("--expires-in", type=int, default=30 * 24 * 3600, help="seconds")
    for name in ("state", "close"):
        action = actions.add_parser(name, help=f"{name} of a channel")
        action.add_argument("channel_id")
    tag = actions.add_parser("tag", help="print a signed payment tag as JSON")
    tag.add_argument("--secret", required=True, help="the channel sender's secret key (64 hex)")
    tag.add_argument("--channel", required=True)
    tag.add_argument("--amount", type=int, required=True, help="sats paid for this event")
    tag.add_argument("--nonce", type=int, required=True, help="greater than any used before")
    tag.add_argument("--currency", default="BTC", choices=["BTC", "BASE", "AKT", "XRP"])
    channel.set_defaults(func=cmd_channel)

    pricing = commands.add_parser("pricing", help="operator price overrides (PostgreSQL)")
    pricing_actions = pricing.add_subparsers(dest="action", required=True)
    setting = pricing_actions.add_parser("set", help="price a kind")
    setting.add_argument("kind", type=int)
    setting.add_argument("sats", type=int)
    unsetting = pricing_actions.add_parser("unset", help="back to the configured price")
    unsetting.add_argument("kind", type=int)
    pricing.set_defaults(func=cmd_pricing)

    publish = commands.add_parser("publish", help="sign and send one event, optionally paid")
    publish.add_argument("--relay", default="ws://127.0.0.1:8080")
    publish.add_argument("--secret", required=True, help="your Nostr secret key (64 hex)")
    publish.add_argument("--kind", type=int, default=1)
    publish.add_argument("--content", default="")
    publish.add_argument("--tag", action="append", default=[], help="comma-separated, repeatable")
    publish.add_argument("--pay-channel", help="pay with a claim on this channel")
    publish.add_argument("--pay-amount", type=int, default=0)
    publish.add_argument("--pay-nonce", type=int, default=0)
    publish.add_argument("--pay-currency", default="BTC")
    publish.set_defaults(func=cmd_publish)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay-cluster", description=__doc__)
    parser.add_argument("--config", help="TOML settings file (default: $RELAY_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run one relay instance (gunicorn + aiohttp)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.set_defaults(func=cmd_serve)

    migrate = commands.add_parser("migrate", help="apply database migrations and exit")
    migrate.set_defaults(func=cmd_migrate)

    up = commands.add_parser("up", help="run a whole local cluster on this machine")
    up.add_argument("--instances", type=int, help="default: 2 on two or more cores, else 1")
    up.add_argument("--workers", type=int, help="per instance; default: one worker per core")
    up.add_argument("--port", type=int, default=8080)
    up.add_argument("--data-dir", default=".data", help="where embedded services keep data")
    up.set_defaults(func=cmd_up)

    env = commands.add_parser("env", help="print export lines for a running `up`")
    env.add_argument("--data-dir", default=".data")
    env.set_defaults(func=cmd_env)
    _add_payment_commands(commands)
    _add_sync_command(commands)
    _add_jsonl_commands(commands)
    admin = commands.add_parser("admin", help="NIP-86: call a relay management method")
    admin.add_argument("--relay", default="ws://127.0.0.1:8080")
    admin.add_argument("--secret", required=True, help="an admin.pubkeys secret key (64 hex)")
    admin.add_argument("method", help="e.g. banpubkey, listbannedpubkeys, allowkind, blockip")
    admin.add_argument("params", nargs="*", help="the method's params, as strings")
    admin.set_defaults(func=cmd_admin)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(f"relay-cluster: {exc}", file=sys.stderr)
        return 2
    except psycopg.OperationalError as exc:
        print(f"relay-cluster: cannot reach PostgreSQL: {exc}".strip(), file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
