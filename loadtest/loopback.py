"""Where load may go: loopback targets only, spread over loopback source addresses.

Nginx in front of the cluster hashes the client address (`hash $remote_addr consistent`), so all
connections from 127.0.0.1 would land on one instance. Connections are therefore spread over
loopback source addresses (127.10.x.y), which Linux routes like 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from loadtest.errors import LoadTestError


def require_loopback(url: str) -> None:
    """Refuse any target that is not on this machine (127.0.0.0/8 or ::1)."""
    if "," in url:
        for one in url.split(","):
            require_loopback(one.strip())
        return
    host = urlsplit(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise LoadTestError(f"cannot resolve {host!r}: {exc}") from exc
    for address in addresses:
        if not ipaddress.ip_address(str(address).split("%", 1)[0]).is_loopback:
            raise LoadTestError(f"refusing {url}: load tests only target loopback addresses")


def http_url(ws_url: str) -> str:
    """ws://host:port/path → http://host:port (for /health and /metrics)."""
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}"


def source_addresses(count: int) -> list[str]:
    """Loopback source addresses to spread connections over (nginx hashes $remote_addr)."""
    if count <= 1:
        return ["127.0.0.1"]
    return [f"127.10.{i // 250}.{i % 250 + 1}" for i in range(min(count, 250 * 250))]
