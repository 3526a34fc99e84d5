"""The launcher against the real `relay-cluster up`: ready line, state file, log, clean stop."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cluster.services.launcher import ClusterProcess
from cluster.services.ports import free_port


@pytest.mark.timeout(240)
def test_start_ready_state_and_terminate_of_a_real_up(data_dir: Path) -> None:
    port = free_port()
    log = data_dir.parent / "up.log"
    up = ClusterProcess(data_dir, port=port, instances=1, log_path=log, cwd=data_dir.parent)
    try:
        up.start()
        assert os.getsid(up.pid) == up.pid  # its own session: a Ctrl-C meant for us skips it
        assert up.wait_ready() == f"ws://127.0.0.1:{port}"
        state = up.state()
        assert state["pid"] == up.pid and state["ready"] is True
        assert state["url"] == f"ws://127.0.0.1:{port}"
        names = [row["name"] for row in state["services"]]
        assert names == ["postgres", "redis", "ledger", "instance-1", "nginx"]
        assert up.terminate() == 0, up.transcript()
    finally:
        up.kill()
    assert "stopping postgres" in up.transcript()
    assert f"relay ready: ws://127.0.0.1:{port}\n" in log.read_text()
    with pytest.raises(FileNotFoundError):
        up.state()  # `up` removed cluster.json on its way out
