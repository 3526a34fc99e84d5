"""`python -m cluster.ledger --port 5000`: run the ledger node (token from DASSIE_RPC_TOKEN)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cluster.ledger.config import DEFAULT_PORT, LedgerConfigError, ledger_config_from_env
from cluster.ledger.server import run_ledger


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.ledger",
        description="A Dassie-compatible ledger node (payment RPC at ws://HOST:PORT/rpc). "
        "The bearer token is read from DASSIE_RPC_TOKEN (at least 32 characters); the database "
        "from --database-url, LEDGER_DATABASE_URL or DATABASE_URL.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (5000)")
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        database_url, token = ledger_config_from_env(database_url=args.database_url)
        run_ledger(args.host, args.port, database_url, token)
    except LedgerConfigError as exc:
        print(f"ledger: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
