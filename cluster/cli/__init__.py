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

from cluster.cli.common import load_for, load_with_database
from cluster.cli.data import add_jsonl_commands, add_sync_command
from cluster.config import ConfigError, Settings
from cluster.store.migrations import apply_migrations


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
    settings = load_for(args)
    _prepare_metrics_dir(settings.network.port)
    from cluster.relay.server import serve

    _require_services(settings)
    applied = asyncio.run(apply_migrations(settings.database.url))
    if applied:
        print(f"applied migrations {applied}", flush=True)
    serve(settings)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = load_with_database(args)
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
        replicas=args.replicas,
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

    settings = load_with_database(args)
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
    up.add_argument(
        "--replicas", type=int, default=0, help="streaming read replicas of the embedded database"
    )
    up.set_defaults(func=cmd_up)

    env = commands.add_parser("env", help="print export lines for a running `up`")
    env.add_argument("--data-dir", default=".data")
    env.set_defaults(func=cmd_env)
    _add_payment_commands(commands)
    add_sync_command(commands)
    add_jsonl_commands(commands)
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
