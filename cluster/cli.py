"""`relay-cluster`: serve, migrate, up (a whole local cluster)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
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


def cmd_serve(args: argparse.Namespace) -> int:
    from cluster.relay.server import serve

    settings = _load(args)
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

    return run_local_cluster(
        config=args.config,
        instances=args.instances,
        workers=args.workers,
        port=args.port,
        data_dir=args.data_dir,
    )


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
    up.add_argument("--instances", type=int, default=2)
    up.add_argument("--workers", type=int, default=2)
    up.add_argument("--port", type=int, default=8080)
    up.add_argument("--data-dir", default=".data", help="where embedded services keep data")
    up.set_defaults(func=cmd_up)
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
