"""What the hold scenario watches while sockets are held: RSS of process trees, /health."""

from __future__ import annotations

import contextlib
import resource
import urllib.request
from collections.abc import Iterable, Mapping, Sequence

import msgspec
import psutil

from loadtest.loopback import http_url
from loadtest.results import HealthSnapshot, TreeRss


def process_tree_rss(pids: Iterable[int]) -> TreeRss:
    """RSS (MiB) of each root process plus all its descendants."""
    total = 0
    count = 0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
                count += 1
    return TreeRss(rss_mib=round(total / 2**20, 1), processes=count)


def memory_snapshot(watch: Mapping[str, Sequence[int]]) -> dict[str, TreeRss]:
    """Every watched tree, and the generator's own peak RSS under the name `generator`."""
    snapshot = {name: process_tree_rss(pids) for name, pids in watch.items()}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    snapshot["generator"] = TreeRss(rss_mib=round(peak, 1))
    return snapshot


def health_snapshot(urls: Sequence[str]) -> list[HealthSnapshot]:
    out = []
    for url in urls:
        try:
            with urllib.request.urlopen(f"{http_url(url)}/health", timeout=5) as response:
                health = msgspec.json.decode(response.read(), type=HealthSnapshot)
            # (the relay's /health does not name itself: the URL is ours)
            out.append(msgspec.structs.replace(health, url=url))
        except (OSError, ValueError, msgspec.DecodeError) as exc:
            out.append(HealthSnapshot(url=url, error=str(exc)))
    return out
