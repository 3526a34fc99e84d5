"""Independent client code for interop tests: nostr-tools from npm, run with node.

`tests/js/package.json` pins the version and `package-lock.json` the whole tree; `npm ci`
installs it once per checkout (again only when the lock file changes). A missing node or npm
fails the test loudly: interop is never skipped.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

JS_DIR = Path(__file__).parent / "js"
NOSTR_TOOLS_ESM = JS_DIR / "node_modules" / "nostr-tools" / "lib" / "esm"
_STAMP = JS_DIR / "node_modules" / ".lock-sha256"


def _lock_digest() -> str:
    return hashlib.sha256((JS_DIR / "package-lock.json").read_bytes()).hexdigest()


def ensure_node_modules() -> Path:
    """Install tests/js's packages if they are missing or older than the lock file."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not on PATH: interop tests need Node.js 20 and npm")
    digest = _lock_digest()
    if not _STAMP.exists() or _STAMP.read_text() != digest:
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=JS_DIR,
            check=True,
            timeout=300,
        )
        _STAMP.write_text(digest)
    return NOSTR_TOOLS_ESM


def run_node(
    script: str, stdin: bytes = b"", timeout: float = 120.0, flags: Sequence[str] = ()
) -> bytes:
    """Run an ES module `script` (source text) in tests/js and return its stdout.

    The script imports nostr-tools by file path, e.g.
    `import {Negentropy} from './node_modules/nostr-tools/lib/esm/nip77.js'`, since not every
    module is in the package's export map. `flags` go to node, e.g.
    `--experimental-websocket` for a global WebSocket (nostr-tools' Relay) on node 20.
    """
    ensure_node_modules()
    completed = subprocess.run(
        ["node", *flags, "--input-type=module", "-e", script],
        cwd=JS_DIR,
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"node failed ({completed.returncode}): {completed.stderr.decode()}")
    return completed.stdout
