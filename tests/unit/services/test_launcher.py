"""The launcher of `relay-cluster up`, with a stand-in program: readiness, exits, timeouts,
the cleaned environment. The real `up` is in tests/cluster/test_launcher.py."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from cluster.services.launcher import ClusterExited, ClusterProcess, clean_environment

READY = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("starting postgres", flush=True)
print("relay ready: ws://127.0.0.1:1234", flush=True)
time.sleep(60)
"""
EXITS = "print('relay-cluster up: port 1 is already in use'); raise SystemExit(3)"
SILENT = "import time; time.sleep(60)"
STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("relay ready: ws://127.0.0.1:1", flush=True)
time.sleep(60)
"""
SHOW_ENV = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
for name in ("DATABASE_URL", "RELAY_DATABASE__URL", "PROMETHEUS_MULTIPROC_DIR", "RELAY_PRICING"):
    print(f"{name}={os.environ.get(name)}", flush=True)
print(f"session leader: {os.getsid(0) == os.getpid()}", flush=True)
print("relay ready: ws://127.0.0.1:1", flush=True)
time.sleep(60)
"""


class StandIn(ClusterProcess):
    """The launcher around a small Python program instead of `relay-cluster up`."""

    def __init__(
        self,
        program: str,
        tmp_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        super().__init__(tmp_path / "data", port=1, env=env, log_path=log_path)
        self.program = program

    def command(self) -> list[str]:
        return [sys.executable, "-c", self.program]


def test_clean_environment_drops_service_locations_and_relay_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in (
        "DATABASE_URL",
        "REDIS_URL",
        "LEDGER_DATABASE_URL",
        "RELAY_CONFIG",
        "RELAY_LIMITS__MAX_LIMIT",
        "DASSIE_RPC_URL",
        "PROMETHEUS_MULTIPROC_DIR",
    ):
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("HOME_OF_RELAY", "kept")  # not a prefix match

    env = clean_environment({"RELAY_PRICING": "1:10", "DATABASE_URL": "mine"})

    assert not [key for key in env if key.startswith(("RELAY_CONFIG", "DASSIE_", "PROMETHEUS_"))]
    assert "REDIS_URL" not in env and "LEDGER_DATABASE_URL" not in env
    assert "RELAY_LIMITS__MAX_LIMIT" not in env
    assert env["RELAY_PRICING"] == "1:10" and env["DATABASE_URL"] == "mine"  # extra wins
    assert env["HOME_OF_RELAY"] == "kept" and env["PATH"] == os.environ["PATH"]


def test_ready_url_transcript_log_and_a_clean_terminate(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "up.log"
    up = StandIn(READY, tmp_path, log_path=log)
    try:
        up.start()
        assert up.wait_ready(timeout=30) == "ws://127.0.0.1:1234"
        assert up.wait_ready(timeout=0) == "ws://127.0.0.1:1234"  # asking again is fine
        assert up.poll() is None
        assert up.terminate() == 0
    finally:
        up.kill()
    assert up.transcript() == "starting postgres\nrelay ready: ws://127.0.0.1:1234"
    assert up.transcript(lines=1) == "relay ready: ws://127.0.0.1:1234"
    assert log.read_text() == "starting postgres\nrelay ready: ws://127.0.0.1:1234\n"


def test_an_exit_before_ready_raises_with_the_code_and_the_output(tmp_path: Path) -> None:
    up = StandIn(EXITS, tmp_path)
    try:
        up.start()
        with pytest.raises(ClusterExited, match="port 1 is already in use") as raised:
            up.wait_ready(timeout=30)
        assert raised.value.returncode == 3
        assert "exited with code 3" in str(raised.value)
    finally:
        up.kill()


def test_no_ready_line_in_time_raises_timeout_with_the_pid(tmp_path: Path) -> None:
    up = StandIn(SILENT, tmp_path)
    try:
        up.start()
        with pytest.raises(TimeoutError, match=f"still running \\(pid {up.pid}\\)"):
            up.wait_ready(timeout=0.2)
    finally:
        up.kill()
    assert up.poll() is not None  # kill() stopped it (SIGTERM: the default action)


def test_terminate_kills_what_ignores_sigterm_and_says_so(tmp_path: Path) -> None:
    up = StandIn(STUBBORN, tmp_path)
    try:
        up.start()
        up.wait_ready(timeout=30)
        with pytest.raises(TimeoutError, match=r"still running 0\.3s after SIGTERM"):
            up.terminate(timeout=0.3)
        assert up.poll() is not None
    finally:
        up.kill()


def test_the_child_gets_the_clean_environment_in_its_own_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://someone-else/db")
    monkeypatch.setenv("RELAY_DATABASE__URL", "postgresql://someone-else/db")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/tmp/elsewhere")
    with StandIn(SHOW_ENV, tmp_path, env={"RELAY_PRICING": "1:10"}) as up:
        up.wait_ready(timeout=30)
    assert up.transcript().splitlines()[:5] == [
        "DATABASE_URL=None",
        "RELAY_DATABASE__URL=None",
        "PROMETHEUS_MULTIPROC_DIR=None",
        "RELAY_PRICING=1:10",
        "session leader: True",
    ]


def test_not_started_yet(tmp_path: Path) -> None:
    up = ClusterProcess(tmp_path, port=1)
    up.kill()  # nothing to tear down
    with pytest.raises(RuntimeError, match="call start"):
        _ = up.pid
    with pytest.raises(FileNotFoundError, match=r"cluster\.json"):
        up.state()
    assert up.command()[-2:] == ["--data-dir", str(tmp_path)]
