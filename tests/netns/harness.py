"""Several "hosts" on one machine: network namespaces on a bridge, with real partitions.

Why: every other test runs on loopback, where a peer is either there or refuses at once. Across
a network a peer can vanish silently (packets dropped, no RST), be slow, or stall; this harness
makes those conditions with what this kernel has (no netem, no iptables): one namespace per
host, a veth from each into a bridge, partitions by blackhole routes or a link set down, and
latency/stalls/cuts through our userspace proxy (tests/netns/proxy.py).

Everything is named after one run tag (`rnx<tag>`) so runs never collide, and `Network.close()`
removes the processes, namespaces, veths and the bridge whatever happened before it. Leftovers
of a run that died (its pid is gone) are removed when the next run starts.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PREFIX = "rnx"
ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS`; a failure raises with ip's own message (they are precise)."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def require_root() -> None:
    """Namespaces need CAP_NET_ADMIN: say so plainly instead of failing deep in `ip`."""
    if os.geteuid() != 0:
        raise RuntimeError(
            "tests/netns need root (network namespaces, veths and a bridge): run `make test` "
            "as root. They are never skipped."
        )
    if shutil.which("ip") is None:
        raise RuntimeError("tests/netns need iproute2: apt-get install -y iproute2")


def remove_stale() -> None:
    """Delete namespaces and bridges of earlier runs whose process is gone (tag holds the pid)."""
    for line in ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.fullmatch(rf"{PREFIX}(\d+)x[0-9a-f]+-\w+", name)
        if match and not _alive(int(match.group(1))):
            ip("netns", "del", name, check=False)
    for line in ip("-o", "link", "show", "type", "bridge").stdout.splitlines():
        name = line.split(":")[1].strip()
        match = re.fullmatch(r"rb(\d+)", name)
        if match and not _alive(int(match.group(1))):
            ip("link", "del", name, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_subnet() -> ipaddress.IPv4Network:
    """A 10.77.X.0/24 that no interface of this machine uses yet (X random: parallel runs)."""
    used = ip("-4", "-o", "addr", "show").stdout + ip("-4", "route", "show").stdout
    candidates = list(range(1, 255))
    random.shuffle(candidates)
    for third in candidates:
        if f"10.77.{third}." not in used:
            return ipaddress.IPv4Network(f"10.77.{third}.0/24")
    raise RuntimeError("no free 10.77.X.0/24 subnet")


class Host:
    """One namespace with one address on the bridge, and the processes started in it."""

    def __init__(self, network: Network, name: str, index: int) -> None:
        self.network = network
        self.name = name
        self.ns = f"{network.tag}-{name}"
        self.address = str(network.subnet[index])
        self.veth = f"rv{network.short}{index}"
        self.processes: list[tuple[subprocess.Popen[bytes], signal.Signals]] = []

    def create(self) -> None:
        peer = f"rp{self.network.short}{int(self.address.rsplit('.', 1)[1])}"
        ip("netns", "add", self.ns)
        ip("link", "add", self.veth, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", self.ns)
        ip("-n", self.ns, "link", "set", peer, "name", "eth0")
        ip("-n", self.ns, "addr", "add", f"{self.address}/24", "dev", "eth0")
        ip("-n", self.ns, "link", "set", "eth0", "up")
        ip("-n", self.ns, "link", "set", "lo", "up")
        ip("link", "set", self.veth, "master", self.network.bridge, "up")

    def popen(
        self,
        command: Sequence[str],
        *,
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> subprocess.Popen[bytes]:
        """Start `command` inside this namespace, in its own session (so a group kill reaches
        every child), output appended to `log`. `ip netns exec` execs: the pid is the command's.
        `stop_signal` is what `stop_processes` sends first (postgres: SIGINT, a fast shutdown;
        its SIGTERM waits for every client to leave)."""
        with log.open("ab") as output:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, *command],
                env={**os.environ, **(env or {})},
                cwd=cwd or ROOT,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append((process, stop_signal))
        return process

    def set_link(self, up: bool) -> None:
        """This host's only link up or down: a partition from every other host (and the
        test client). Addresses stay; the connected route returns with the link."""
        ip("-n", self.ns, "link", "set", "eth0", "up" if up else "down")

    def stop_processes(self, timeout: float = 15) -> None:
        for process, stop_signal in reversed(self.processes):
            stop_group(process, stop_signal, timeout)
        self.processes.clear()


def stop_group(process: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> None:
    """`sig` to the process group, SIGKILL after `timeout`; reaped either way."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # children that outlived their parent
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


class Network:
    """A bridge with the host's address `.1`, and namespaces (hosts) attached to it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.short = f"{os.getpid() % 100000}"
        self.tag = f"{PREFIX}{os.getpid()}x{os.urandom(2).hex()}"
        self.bridge = f"rb{os.getpid()}"
        self.subnet = _free_subnet()
        self.host_address = str(self.subnet[1])
        self.hosts: dict[str, Host] = {}
        self.partitions: set[tuple[str, str]] = set()
        self.cleanup_dirs: list[Path] = []

    def create(self) -> None:
        remove_stale()
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.host_address}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def add_host(self, name: str) -> Host:
        host = Host(self, name, 2 + len(self.hosts))
        self.hosts[name] = host
        host.create()
        return host

    def partition(self, a: Host, b: Host) -> None:
        """Drop everything between two hosts, both ways, silently (blackhole routes): no RST
        and no ICMP, as when a switch or a cloud network loses the path. Others are untouched."""
        ip("-n", a.ns, "route", "add", "blackhole", f"{b.address}/32")
        ip("-n", b.ns, "route", "add", "blackhole", f"{a.address}/32")
        self.partitions.add((a.name, b.name))

    def heal(self, a: Host, b: Host) -> None:
        ip("-n", a.ns, "route", "del", "blackhole", f"{b.address}/32", check=False)
        ip("-n", b.ns, "route", "del", "blackhole", f"{a.address}/32", check=False)
        self.partitions.discard((a.name, b.name))

    def close(self) -> None:
        """Stop every process, then delete the namespaces (their veths go with them) and the
        bridge. Each step is attempted even when an earlier one failed."""
        for host in reversed(list(self.hosts.values())):
            with contextlib.suppress(Exception):
                host.stop_processes()
        for host in self.hosts.values():
            ip("netns", "del", host.ns, check=False)
            ip("link", "del", host.veth, check=False)
        ip("link", "del", self.bridge, check=False)
        self.hosts.clear()
        for directory in self.cleanup_dirs:
            shutil.rmtree(directory, ignore_errors=True)


# ---- services inside hosts ------------------------------------------------------------------


def wait_until(probe: Any, timeout: float, what: str, process: subprocess.Popen[bytes]) -> None:
    """Poll `probe()` until true (bounded); fail at once if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        with contextlib.suppress(OSError):
            if probe():
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready within {timeout:g}s")


def tcp_open(address: str, port: int) -> bool:
    with socket.create_connection((address, port), timeout=1):
        return True


def start_postgres(host: Host, port: int = 5432) -> str:
    """A throwaway PostgreSQL in `host`, listening on its address, trusting the subnet.

    Runs as the `postgres` user (setpriv execs, so the pid stays the postmaster's). fsync stays
    on: the durability promise is what the partition tests check."""
    data = Path(tempfile.mkdtemp(prefix="relay-netns-pg-"))
    data.chmod(0o755)
    shutil.chown(data, "postgres", "postgres")
    as_postgres = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
    log = host.network.directory / "postgres.log"
    subprocess.run(
        [
            *as_postgres,
            str(PG_BIN / "initdb"),
            "-D",
            str(data / "data"),
            "--auth=trust",
            "-U",
            "postgres",
            "--encoding=UTF8",
            "--locale=C",
        ],
        cwd=data,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=120,
        check=True,
    )
    with (data / "data" / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all {host.network.subnet} trust\n")
    process = host.popen(
        [
            *as_postgres,
            str(PG_BIN / "postgres"),
            "-D",
            str(data / "data"),
            "-p",
            str(port),
            "-k",
            str(data),
            "-c",
            f"listen_addresses={host.address}",
            "-c",
            "max_connections=200",
        ],
        log=log,
        cwd=data,
        stop_signal=signal.SIGINT,
    )
    wait_until(lambda: tcp_open(host.address, port), 60, "postgres", process)
    host.network.cleanup_dirs.append(data)
    return f"postgresql://postgres@{host.address}:{port}/postgres"


def start_redis(host: Host, port: int = 6379) -> str:
    work = Path(tempfile.mkdtemp(prefix="relay-netns-redis-"))
    host.network.cleanup_dirs.append(work)
    process = host.popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            host.address,
            "--save",
            "",
            "--appendonly",
            "no",
            # Protected mode refuses every client off loopback when no password is set; here
            # the clients are other namespaces by design.
            "--protected-mode",
            "no",
            "--dir",
            str(work),
        ],
        log=host.network.directory / f"redis-{host.name}.log",
        cwd=work,
    )
    wait_until(lambda: tcp_open(host.address, port), 30, "redis", process)
    return f"redis://{host.address}:{port}/0"


class Relay:
    """`python -m cluster.cli serve` inside a host; the test client reaches it over the bridge."""

    def __init__(self, host: Host, env: Mapping[str, str], port: int = 7000) -> None:
        self.host = host
        self.port = port
        self.env = dict(env)
        self.log = host.network.directory / f"relay-{host.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://{self.host.address}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host.address}:{self.port}"

    def start(self, timeout: float = 60) -> None:
        self.process = self.host.popen(
            [
                sys.executable,
                "-m",
                "cluster.cli",
                "serve",
                "--host",
                self.host.address,
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            env=self.env,
            log=self.log,
        )
        try:
            wait_until(self._healthy, timeout, f"relay {self.host.name}", self.process)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}:\n{self.log_tail()}") from None

    def _healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.http_url}/health", timeout=2) as response:
            return bool(response.status == 200)

    def metrics(self, token: str) -> str:
        request = urllib.request.Request(
            f"{self.http_url}/metrics", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return str(response.read().decode())

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
            return "\n".join(line[:300] for line in text)
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process, signal.SIGTERM, 20)


class Proxy:
    """tests/netns/proxy.py inside a host: `listen` on the host's address, forwarding to
    `target`; `control()` sends one command (delay, stall, cut, stats) and returns the state."""

    def __init__(self, host: Host, listen_port: int, target: tuple[str, int]) -> None:
        self.host = host
        self.port = listen_port
        self.control_port = listen_port + 1
        self.target = target
        process = host.popen(
            [
                sys.executable,
                "-m",
                "tests.netns.proxy",
                "--listen",
                f"{host.address}:{listen_port}",
                "--target",
                f"{target[0]}:{target[1]}",
                "--control",
                f"{host.address}:{self.control_port}",
            ],
            log=host.network.directory / f"proxy-{host.name}-{listen_port}.log",
        )
        wait_until(lambda: tcp_open(host.address, self.control_port), 30, "proxy", process)

    @property
    def address(self) -> str:
        return self.host.address

    def control(self, **command: Any) -> dict[str, Any]:
        with socket.create_connection((self.host.address, self.control_port), timeout=5) as sock:
            sock.sendall(json.dumps(command).encode() + b"\n")
            answer = sock.makefile("rb").readline()
        state: dict[str, Any] = json.loads(answer)
        return state
