"""One generator scenario as a subprocess: its JSON decoded into the scenario's Struct.

A subprocess per scenario gives every run a fresh event loop and heap, and lets the bench time
the machine's other load around it.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import msgspec

from loadtest.errors import LoadTestError
from loadtest.machine import OtherLoad
from loadtest.progress import log
from loadtest.results import ScenarioResult

REPO = Path(__file__).resolve().parents[1]
R = TypeVar("R", bound=ScenarioResult)


def run_generator(args: Sequence[str], work: Path, name: str, timeout: float, kind: type[R]) -> R:
    """`python -m loadtest.generator <args> --json-out <work>/<name>.json`, decoded as `kind`,
    with the machine's load during the run in `machine`."""
    out = work / f"{name}.json"
    command = [sys.executable, "-m", "loadtest.generator", *args, "--json-out", str(out)]
    log(f"{name}: {shlex.join(command[1:])}")
    load = OtherLoad()
    completed = subprocess.run(
        command, cwd=REPO, timeout=timeout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, check=False,
    )  # fmt: skip
    for line in completed.stdout.splitlines():
        log(f"  {line}")
    if completed.returncode != 0:
        raise LoadTestError(f"generator {name} failed ({completed.returncode})")
    try:
        result = msgspec.json.decode(out.read_bytes(), type=kind)
    except (OSError, msgspec.DecodeError) as exc:
        raise LoadTestError(f"generator {name} wrote no readable {out}: {exc}") from exc
    result.machine = load.result()
    return result
