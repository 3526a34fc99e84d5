"""Buffered multiprocess metrics: an update costs a float addition, /metrics still sees it.

Multiprocess mode is chosen when cluster.metrics is first imported, so each case runs in a
fresh interpreter with PROMETHEUS_MULTIPROC_DIR set, as `relay-cluster serve` runs workers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import glob, os
from prometheus_client import CollectorRegistry, multiprocess, generate_latest
from cluster import metrics

def on_disk() -> str:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry).decode()

metrics.EVENTS_DELIVERED.inc(3)
metrics.EVENT_ACCEPTANCE.observe(0.004)
metrics.CONNECTIONS.inc()
metrics.CONNECTIONS.inc()
metrics.CONNECTIONS.dec()
before = on_disk()
assert "relay_events_delivered_total 3.0" not in before, before
print("pending", metrics.EVENTS_DELIVERED._value.get())
rendered = metrics.render()[0].decode()
assert "relay_events_delivered_total 3.0" in rendered, rendered
assert 'relay_event_acceptance_seconds_bucket{le="0.005"} 1.0' in rendered, rendered
assert "relay_connections 1.0" in rendered, rendered
metrics.EVENTS_DELIVERED.inc(2)
metrics.flush_values()
assert "relay_events_delivered_total 5.0" in on_disk()
metrics.CONNECTIONS.set(7)
metrics.CONNECTIONS.inc()
metrics.flush_values()
assert "relay_connections 8.0" in on_disk()
print("ok")
"""


def test_updates_reach_the_multiprocess_files_at_flush_not_before(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["pending 3.0", "ok"]
