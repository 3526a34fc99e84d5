"""Render nginx/relay.conf.template: the cluster's sticky, WebSocket-aware load balancer config.

Operators can render it by hand (the template lives in the repository's `nginx/` folder):

    python -m cluster.services.nginx_config --listen-port 8080 \\
        --upstream 8101 --upstream 8102 --prefix /tmp/relay-nginx > nginx.conf
    nginx -p /tmp/relay-nginx/ -c "$PWD/nginx.conf" -g 'daemon off;'

Add `--user 'nobody nogroup'` when nginx is started as root (see `default_worker_user`).
"""

from __future__ import annotations

import argparse
import grp
import ipaddress
import os
import pwd
import re
import string
import sys
from collections.abc import Sequence
from pathlib import Path

from cluster.services.ports import url_host

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "nginx" / "relay.conf.template"
"""The template ships in the repository's top-level `nginx/` folder, next to `cluster/`."""

UPSTREAM_OPTIONS = "max_fails=1 fail_timeout=5s"
# Descriptors per nginx worker: two per proxied WebSocket (client + upstream) and a few more.
DEFAULT_RLIMIT_NOFILE = 70_000
HANDSHAKE_BURST_SECONDS = 5
"""One failed attempt marks an instance down for 5 s, so nginx stops sending clients to it."""

_USER = re.compile(r"[A-Za-z0-9_.-]+(?: [A-Za-z0-9_.-]+)?")
"""`user NAME [GROUP]`: names only, so a value cannot inject further directives."""
# Characters that would break out of a quoted nginx string or start a variable.
_UNSAFE_PATH_CHARS = frozenset("\"'\\$;{}\n\r")


# `${name}` only: the escaped/named/invalid alternatives can never match, so nginx's own
# `$remote_addr` etc. are left untouched instead of being taken for placeholders.
_PLACEHOLDER = r"""
\$(?:
  (?P<escaped>(?!))                 |
  {(?P<braced>[_a-z][_a-z0-9]*)}    |
  (?P<named>(?!))                   |
  (?P<invalid>(?!))
)
"""


class _NginxTemplate(string.Template):
    """string.Template with `${name}` placeholders only (compiled in __init_subclass__)."""

    pattern = _PLACEHOLDER  # type: ignore[assignment]  # typeshed types the compiled result


def load_template(path: Path = TEMPLATE_PATH) -> str:
    """Read the template, explaining where it was expected when it is missing."""
    try:
        return path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"nginx config template not found at {path}. It ships in the repository's "
            "`nginx/` folder next to the `cluster/` package; run from a source checkout "
            "(pip install -e .) or copy nginx/relay.conf.template there."
        ) from None


def default_worker_user() -> str | None:
    """The `user` directive nginx needs when started as root, or None when it is not root.

    Debian has `nobody` but no `nobody` group, so nginx's built-in `nobody nobody` can fail;
    `nobody nogroup` exists on Debian/Ubuntu. The workers need no filesystem access (see the
    template), so an account without a home directory is fine.
    """
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return "root root"  # minimal images without nobody: keep workers working rather than fail
    for group in ("nogroup", "nobody"):
        try:
            grp.getgrnam(group)
        except KeyError:
            continue
        return f"nobody {group}"
    return "nobody root"


def _check_prefix(prefix: Path) -> str:
    text = str(Path(prefix).absolute())
    bad = sorted(_UNSAFE_PATH_CHARS.intersection(text))
    if bad:
        raise ValueError(f"nginx prefix {text!r} contains characters nginx cannot quote: {bad}")
    return text


def _check_port(port: int, what: str) -> int:
    if not 0 < port < 65536:
        raise ValueError(f"{what} must be a TCP port (1-65535), not {port}")
    return port


def handshake_limits(per_second: int, exempt: Sequence[str]) -> dict[str, str]:
    """The template's `handshake_limits` (http block) and `handshake_limit` (location /):
    nginx's limit_req per client address, `exempt` CIDRs not counted (an empty key is not
    limited), a burst of HANDSHAKE_BURST_SECONDS' worth, refusals answered 429."""
    if per_second < 0:
        raise ValueError(f"handshakes per second must be >= 0, not {per_second}")
    if per_second == 0:
        off = "    # handshake limit off (rate_limits.handshakes_per_second_per_ip = 0)"
        return {"handshake_limits": off, "handshake_limit": "            # no handshake limit"}
    networks = [str(ipaddress.ip_network(entry, strict=False)) for entry in exempt]
    geo = "".join(f"        {network} 1;\n" for network in networks)
    limits = (
        "    # Handshakes and HTTP requests per client address"
        " (rate_limits.handshakes_per_second_per_ip):\n"
        "    # beyond the burst nginx answers 429 itself, so reconnect storms never reach a"
        " relay worker.\n"
        "    geo $handshake_exempt {\n"
        "        default 0;\n"
        f"{geo}"
        "    }\n"
        "    map $handshake_exempt $handshake_key {\n"
        '        1 "";\n'
        "        default $binary_remote_addr;\n"
        "    }\n"
        f"    limit_req_zone $handshake_key zone=handshakes:10m rate={per_second}r/s;\n"
        "    limit_req_status 429;"
    )
    burst = per_second * HANDSHAKE_BURST_SECONDS
    return {
        "handshake_limits": limits,
        "handshake_limit": f"            limit_req zone=handshakes burst={burst} nodelay;",
    }


def render_nginx_config(
    listen_port: int,
    upstream_ports: list[int],
    prefix: Path,
    *,
    listen_host: str = "127.0.0.1",
    worker_processes: int = 1,
    user: str | None = None,
    upstream_host: str = "127.0.0.1",
    template_path: Path = TEMPLATE_PATH,
    rlimit_nofile: int = DEFAULT_RLIMIT_NOFILE,
    handshakes_per_second: int = 0,
    exempt: Sequence[str] = (),
) -> str:
    """Fill the template: nginx on listen_host:listen_port in front of the given instance ports.

    `prefix` holds nginx's pid, temp dirs and logs; pass the same directory to `nginx -p`.
    `user` renders a `user` directive (needed when nginx runs as root), e.g. "nobody nogroup".
    """
    if not upstream_ports:
        raise ValueError("at least one upstream port is required")
    if worker_processes < 1:
        raise ValueError(f"worker_processes must be >= 1, not {worker_processes}")
    if rlimit_nofile < 1024:
        raise ValueError(f"rlimit_nofile must be >= 1024, not {rlimit_nofile}")
    if user is not None and not _USER.fullmatch(user):
        raise ValueError(f"invalid nginx user {user!r}")
    servers = "\n".join(
        f"        server {url_host(upstream_host)}:{_check_port(port, 'upstream port')} "
        f"{UPSTREAM_OPTIONS};"
        for port in upstream_ports
    )
    values = {
        "user_directive": f"user {user};" if user else "# no `user` directive: nginx is not root",
        "worker_processes": str(worker_processes),
        "worker_rlimit_nofile": str(rlimit_nofile),
        "prefix": _check_prefix(prefix),
        "listen_address": f"{url_host(listen_host)}:{_check_port(listen_port, 'listen port')}",
        "upstream_servers": servers,
        **handshake_limits(handshakes_per_second, exempt),
    }
    try:
        return _NginxTemplate(load_template(template_path)).substitute(values)
    except KeyError as exc:
        raise ValueError(
            f"{template_path} uses an unknown placeholder {exc}; known: {sorted(values)}"
        ) from None


def write_nginx_config(
    path: Path,
    listen_port: int,
    upstream_ports: list[int],
    prefix: Path,
    *,
    listen_host: str = "127.0.0.1",
    worker_processes: int = 1,
    user: str | None = None,
    rlimit_nofile: int = DEFAULT_RLIMIT_NOFILE,
    handshakes_per_second: int = 0,
    exempt: Sequence[str] = (),
) -> Path:
    """Render the config to `path` (creating `prefix` and the parent folder); returns `path`."""
    text = render_nginx_config(
        listen_port,
        upstream_ports,
        prefix,
        listen_host=listen_host,
        worker_processes=worker_processes,
        user=user,
        rlimit_nofile=rlimit_nofile,
        handshakes_per_second=handshakes_per_second,
        exempt=exempt,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Path(prefix).mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.services.nginx_config",
        description="Print the relay cluster's nginx.conf to stdout.",
    )
    parser.add_argument("--listen-port", type=int, required=True, help="port nginx listens on")
    parser.add_argument("--listen-host", default="127.0.0.1", help="address nginx listens on")
    parser.add_argument(
        "--upstream",
        type=int,
        action="append",
        required=True,
        metavar="PORT",
        help="a relay instance port on 127.0.0.1 (repeat for each instance)",
    )
    parser.add_argument("--upstream-host", default="127.0.0.1", help="host of the instances")
    parser.add_argument("--prefix", type=Path, required=True, help="nginx -p directory")
    parser.add_argument("--worker-processes", type=int, default=1)
    parser.add_argument("--user", help="nginx `user` directive, e.g. 'nobody nogroup' as root")
    parser.add_argument("--rlimit-nofile", type=int, default=DEFAULT_RLIMIT_NOFILE)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        text = render_nginx_config(
            args.listen_port,
            args.upstream,
            args.prefix,
            listen_host=args.listen_host,
            worker_processes=args.worker_processes,
            user=args.user,
            upstream_host=args.upstream_host,
            rlimit_nofile=args.rlimit_nofile,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"nginx_config: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
