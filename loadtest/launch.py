"""Starting the bench's own cluster: `relay-cluster up` through the shared launcher.

What the bench adds on top of cluster.services.launcher: a priced kind for the paid scenario
(RELAY_PRICING), the relay's rate limits switched off, and the data dir layout `<data>/cluster`
(`<data>` also holds the bench's own files: up.log, the fill manifest, channels, results).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
from collections.abc import Mapping
from pathlib import Path

import msgspec

from cluster.config import Settings
from cluster.services.launcher import ClusterExited, ClusterProcess
from loadtest.errors import LoadTestError
from loadtest.histograms import METRICS_TOKEN_ENV
from loadtest.progress import log
from loadtest.targets import Target, target_from_state

PAID_PRICE = 10
READY_TIMEOUT = 240.0
STOP_TIMEOUT = 90.0
REPO = Path(__file__).resolve().parents[1]


def rate_limit_overrides() -> dict[str, str]:
    """Environment that switches the relay's per-IP/per-pubkey rate limits and per-address
    budgets off (0 = off).

    The bench measures capacity, not policy: a few loopback addresses sending thousands of
    events per second would otherwise be throttled. Only settings that exist in this version
    of cluster.config are set (unknown keys are refused by the settings schema).
    """
    env: dict[str, str] = {}
    for section in msgspec.structs.fields(Settings):
        if "rate" not in section.name or not isinstance(section.type, type):
            continue
        with contextlib.suppress(TypeError):
            for item in msgspec.structs.fields(section.type):
                if re.search(r"per_(minute|second|hour)|^connections_per_ip$", item.name):
                    env[f"RELAY_{section.name.upper()}__{item.name.upper()}"] = "0"
    # Budgets per address that are counts, not rates: the bench holds 100,000 subscriptions
    # from a few loopback addresses (nginx forwards them, and forwarded addresses are never
    # exempt), so they are lifted too (0 = no limit).
    for name in ("max_subscriptions_per_address", "max_wide_filters_per_address"):
        env[f"RELAY_LIMITS__{name.upper()}"] = "0"
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BenchCluster:
    """The cluster the bench started in `<data>/cluster`; always stopped by `stop()`."""

    def __init__(
        self,
        data_dir: Path,
        instances: int,
        workers: int,
        port: int,
        paid_kind: int,
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`env` replaces the rate-limit overrides: the abuse suite wants the limits on."""
        self.data_dir = data_dir
        self.cluster_dir = data_dir / "cluster"
        self.paid_kind = paid_kind
        self.instances = instances
        self.workers = workers
        limits = rate_limit_overrides() if env is None else dict(env)
        # /metrics needs a token: one for this run, which scrape() reads back from the env.
        token = os.environ.setdefault(METRICS_TOKEN_ENV, secrets.token_hex(16))
        env = {"RELAY_PRICING": f"{paid_kind}:{PAID_PRICE}", METRICS_TOKEN_ENV: token, **limits}
        self.process = ClusterProcess(
            self.cluster_dir,
            port=port,
            instances=instances,
            workers=workers,
            env=env,
            log_path=data_dir / "up.log",
            cwd=REPO,
        )
        self._started = False

    def start(self, timeout: float = READY_TIMEOUT) -> Target:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log(f"starting: relay-cluster up --instances {self.instances} --workers "
            f"{self.workers} --data-dir {self.cluster_dir}")  # fmt: skip
        self.process.start()
        self._started = True
        try:
            url = self.process.wait_ready(timeout)
        except ClusterExited as exc:
            raise LoadTestError(str(exc)) from exc
        except TimeoutError as exc:
            raise LoadTestError(f"cluster not ready within {timeout:g}s: {exc}") from exc
        target = target_from_state(self.process.state(), self.cluster_dir, url)
        target.paid_kind = self.paid_kind
        target.paid_price = PAID_PRICE
        return target

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if not self._started or self.process.poll() is not None:
            return
        log("stopping the cluster")
        try:
            self.process.terminate(timeout)
        except TimeoutError:
            log("cluster did not stop in time; killed it")
