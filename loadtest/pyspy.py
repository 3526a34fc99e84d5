"""Where a relay worker's time goes: py-spy records the busiest worker under publish load.

Samples are attributed to the innermost relay function on the stack (`owner`: which part of
the relay the time belongs to) and to the leaf frame (`self`).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import msgspec
import psutil

from loadtest.plan import Plan
from loadtest.progress import log
from loadtest.targets import Target

REPO = Path(__file__).resolve().parents[1]
LIBRARIES = ("redis", "psycopg", "psycopg_pool", "aiohttp", "asyncio", "prometheus_client")
FRAME = re.compile(r"^(.*?) \((.*?)(?::\d+)?\)$")

Share = tuple[str, float]


class ProfileSummary(msgspec.Struct, kw_only=True):
    samples: int
    owner: list[Share] = []
    self_: list[Share] = msgspec.field(default_factory=list, name="self")
    pid: int | None = None
    file: str | None = None


def find_py_spy() -> str | None:
    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


def busiest_worker(target: Target) -> int | None:
    workers = []
    for name, pids in target.watch.items():
        if not name.startswith("instance-"):
            continue
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                workers.extend(psutil.Process(pid).children())
    if not workers:
        return None
    for proc in workers:
        with contextlib.suppress(psutil.Error):
            proc.cpu_percent(None)
    time.sleep(1.0)
    scored = []
    for proc in workers:
        with contextlib.suppress(psutil.Error):
            scored.append((float(proc.cpu_percent(None)), int(proc.pid)))
    return max(scored)[1] if scored else None


def _parse(frame: str) -> tuple[str, str]:
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip(), ""
    func, path = match.groups()
    return func, path


def _label(func: str, path: str) -> str:
    return f"{func} ({'/'.join(Path(path).parts[-2:])})" if path else func


def _owner(frames: list[tuple[str, str]]) -> str:
    """The part of the relay a stack's time belongs to."""
    relay_frames = [
        (func, path)
        for func, path in frames
        if (path.startswith("cluster/") or "/cluster/" in path)
        and not path.endswith(("cluster/cli.py", "relay/server.py"))
    ]
    if relay_frames:
        return _label(*relay_frames[-1])
    if frames[-1][0].endswith(".run") and "aiohttp/worker.py" in frames[-1][1]:
        return "(event loop: uvloop C code, socket I/O, idle)"
    # A coroutine resumed straight from the loop: py-spy shows no awaiting relay frame.
    loop_at = max(
        (i for i, (func, path) in enumerate(frames) if "aiohttp/worker.py" in path), default=-1
    )
    libraries = [
        (path.split("/", 1)[0], func, path)
        for func, path in frames[loop_at + 1 :]
        if path.split("/", 1)[0] in LIBRARIES
    ]
    lib, func, path = libraries[0] if libraries else ("other", *frames[-1])
    return f"[{lib}] {_label(func, path)}"


def summarize_profile(folded: Path, top: int = 15) -> ProfileSummary:
    """Shares of py-spy samples (raw/collapsed stacks) by owner and by leaf frame."""
    owner: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_parse(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        own[_label(*frames[-1])] += count
        owner[_owner(frames)] += count
    if not total:
        return ProfileSummary(samples=0)

    def share(counter: Counter[str]) -> list[Share]:
        return [(k, round(100 * v / total, 1)) for k, v in counter.most_common(top)]

    return ProfileSummary(samples=total, owner=share(owner), self_=share(own))


def run_profile(target: Target, plan: Plan, work: Path) -> ProfileSummary | None:
    """py-spy records the busiest relay worker while 1,000 events/s are published."""
    py_spy = find_py_spy()
    if py_spy is None or plan.profile_seconds <= 0:
        return None
    gen = subprocess.Popen(
        [sys.executable, "-m", "loadtest.generator", "publish", "--url", target.url,
         "--rate", str(plan.accept_rate), "--duration", str(plan.profile_seconds + 8),
         "--connections", str(plan.accept_connections),
         "--json-out", str(work / "profile-load.json")],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(4)  # pre-signing and connecting
        pid = busiest_worker(target)
        if pid is None:
            return None
        folded = work / f"profile-{pid}.txt"
        log(f"profile: py-spy record --pid {pid} for {plan.profile_seconds:g}s")
        subprocess.run(
            [py_spy, "record", "--pid", str(pid), "--duration", str(int(plan.profile_seconds)),
             "--rate", "200", "--format", "raw", "--nonblocking", "--output", str(folded)],
            timeout=plan.profile_seconds + 60, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    finally:
        try:
            gen.wait(plan.profile_seconds + 60)
        except subprocess.TimeoutExpired:
            gen.kill()
    if not folded.exists():
        return None
    summary = summarize_profile(folded)
    summary.pid = pid
    summary.file = str(folded)
    return summary
