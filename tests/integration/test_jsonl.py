"""`relay-cluster export` and `import` (JSON lines, gzip) between two real databases.

What goes out comes back in identically (the same JSON text), a filter narrows the export,
import verifies every line and keeps the relay's rules (duplicates, NIP-09, NIP-62), and
running it twice changes nothing.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from cluster.config import DatabaseSettings
from cluster.nostr.event import encode_event
from cluster.nostr.signing import Signer
from cluster.store.pool import create_write_pool
from cluster.store.writer import PostgresBatchSaver, SaveRequest
from tests.services import migrated_database


def cli(
    database_url: str, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args],
        env=env, capture_output=True, text=True, timeout=120, check=True,
        input=None if stdin is None else stdin.decode(),
    )  # fmt: skip


async def rows(url: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute("SELECT raw FROM events ORDER BY id")
        return [str(raw) for (raw,) in await cursor.fetchall()]


async def test_export_then_import_round_trips(postgres_server_url: str, tmp_path: Path) -> None:
    author, other = Signer(), Signer()
    now = int(time.time())
    events = [author.sign(1, f"note {i}", created_at=now - 100 + i) for i in range(30)]
    events += [other.sign(7, "+", tags=[["e", events[0].id]], created_at=now - 50)]
    events += [author.sign(0, '{"name":"a"}', created_at=now - 40)]
    async with (
        migrated_database(postgres_server_url, "jsonl_source") as source,
        migrated_database(postgres_server_url, "jsonl_target") as target,
    ):
        pool = create_write_pool(DatabaseSettings(url=source), size=1, name="seed")
        await pool.open()
        try:
            requests = [SaveRequest(e, encode_event(e).decode()) for e in events]
            await PostgresBatchSaver(pool).save_many(requests)
        finally:
            await pool.close()

        dump = tmp_path / "all.jsonl.gz"
        cli(source, "export", "--output", str(dump))
        lines = gzip.decompress(dump.read_bytes()).decode().splitlines()
        assert len(lines) == len(events)
        assert [json.loads(line)["created_at"] for line in lines] == sorted(
            e.created_at for e in events
        )
        narrow = tmp_path / "reactions.jsonl"
        cli(source, "export", "--filter", json.dumps({"kinds": [7]}), "--output", str(narrow))
        assert [json.loads(line)["id"] for line in narrow.read_text().splitlines()] == [
            events[30].id
        ]

        with gzip.open(dump, "at") as handle:  # lines import must refuse, and carry on
            handle.write("not json\n")
            forged = json.loads(lines[0]) | {"content": "forged"}
            handle.write(json.dumps(forged) + "\n")
        imported = cli(target, "import", str(dump), "--batch", "7")
        first = json.loads(imported.stdout)
        assert first == {"invalid": 1, "not an event": 1, "stored": len(events)}
        bad = [line for line in imported.stderr.splitlines() if line.startswith("line ")]
        assert bad[0].startswith(f"line {len(events) + 1}: not an event")  # the line numbers
        assert bad[1].startswith(f"line {len(events) + 2}: invalid: event id does not match")
        assert await rows(target) == await rows(source)
        again = json.loads(cli(target, "import", stdin=gzip.decompress(dump.read_bytes())).stdout)
        assert again == {"duplicate": len(events), "invalid": 1, "not an event": 1}

        vanish = tmp_path / "vanish.jsonl"
        request = author.sign(62, "", tags=[["relay", "ALL_RELAYS"]], created_at=now)
        async with await psycopg.AsyncConnection.connect(target, autocommit=True) as conn:
            await conn.execute(
                "SELECT relay_vanish(%s, %s, %s, %s)",
                (bytes.fromhex(author.pubkey), now, bytes.fromhex(request.id), "{}"),
            )
        vanish.write_text("\n".join(lines) + "\n")
        refused = json.loads(cli(target, "import", str(vanish)).stdout)
        assert refused == {"vanished": len(events) - 1, "duplicate": 1}  # only the reaction left
