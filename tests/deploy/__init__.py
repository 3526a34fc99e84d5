"""Checks of the deployment artefacts (Dockerfile, compose, Kubernetes, Akash), offline and fast.

Shared helpers live here: the repository paths, a YAML loader that refuses duplicate keys, the
compose-style `${VAR}` interpolation, `.env` parsing and the CLI check every artefact's
commands go through.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import ipaddress
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from cluster.cli import build_parser
from cluster.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "docker-compose.cluster.yml"
ENV_EXAMPLE = ROOT / ".env.example"
K8S_DIR = ROOT / "k8s"
AKASH_SDL = ROOT / "akash" / "deploy.yaml"
AKASH_HA_SDL = ROOT / "akash" / "deploy-ha.yaml"
COMPOSE_NGINX_CONF = ROOT / "nginx" / "compose.conf"

SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET", re.IGNORECASE)
"""Environment variables whose values are secrets: never committed, always injected."""

TEST_SECRET = "0123456789abcdef" * 4
"""What the tests put where an operator puts a generated secret (64 hex characters)."""


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that rejects duplicate mapping keys (PyYAML keeps the last silently)."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    # Only the mapping's own keys: keys merged in with `<<: *anchor` may be overridden.
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml_documents(text: str) -> list[Any]:
    """Every non-empty document of a YAML stream, duplicate keys refused."""
    return [doc for doc in yaml.load_all(text, Loader=StrictLoader) if doc is not None]


def load_yaml(path: Path) -> Any:
    documents = load_yaml_documents(path.read_text())
    assert len(documents) == 1, f"{path}: expected one YAML document, found {len(documents)}"
    return documents[0]


def parse_env_file(path: Path) -> dict[str, str]:
    """`KEY=value` lines of a dotenv file (comments and blank lines skipped, no quoting)."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"{path}:{number}: not KEY=value: {raw!r}")
        values[key] = value
    return values


def with_test_secrets(values: Mapping[str, str]) -> dict[str, str]:
    """The example values with every empty secret filled in, as an operator would."""
    return {
        key: (TEST_SECRET if SECRET_NAME.search(key) and not value else value)
        for key, value in values.items()
    }


class InterpolationError(ValueError):
    """A `${VAR:?message}` whose variable is missing, or a malformed placeholder."""


_PLACEHOLDER = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.S)


def interpolate(text: str, env: Mapping[str, str], used: set[str] | None = None) -> str:
    """Compose-specification interpolation: $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e},
    ${VAR?e}, ${VAR:+r}, ${VAR+r} and $$ (a literal dollar)."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            name = match["named"]
            if used is not None:
                used.add(name)
            return env.get(name, "")
        braced = _BRACED.fullmatch(match["braced"])
        if braced is None:
            raise InterpolationError(f"invalid placeholder ${{{match['braced']}}}")
        name, op, arg = braced["name"], braced["op"], braced["arg"] or ""
        if used is not None:
            used.add(name)
        value = env.get(name)
        is_set, non_empty = value is not None, bool(value)
        if op is None:
            return value or ""
        present = non_empty if op.startswith(":") else is_set
        if op.endswith("-"):
            return value if present and value is not None else arg
        if op.endswith("?"):
            if not present:
                raise InterpolationError(f"required variable {name} is missing: {arg}")
            return value or ""
        return arg if present else ""  # `+`

    return _PLACEHOLDER.sub(replace, text)


def interpolate_tree(node: Any, env: Mapping[str, str], used: set[str] | None = None) -> Any:
    """interpolate() applied to every string value (not keys) of a loaded YAML tree."""
    if isinstance(node, str):
        return interpolate(node, env, used)
    if isinstance(node, list):
        return [interpolate_tree(item, env, used) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env, used) for key, value in node.items()}
    return node


def parse_cli(args: Sequence[str]) -> argparse.Namespace:
    """Parse a container's arguments with the real `relay-cluster` parser; argparse's exit on
    an unknown command or option becomes an AssertionError naming the arguments."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return build_parser().parse_args(list(args))
    except SystemExit as exc:
        raise AssertionError(
            f"`relay-cluster {' '.join(args)}` is not a valid command: {stderr.getvalue()}"
        ) from exc


def env_list_to_dict(entries: Sequence[str]) -> dict[str, str]:
    """["KEY=value", ...] (Akash SDL, Dockerfile ENV lists) → {"KEY": "value"}."""
    result: dict[str, str] = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if not sep or not key:
            raise ValueError(f"environment entry {entry!r} is not KEY=value")
        result[key] = value
    return result


PROXY_ADDRESSES = ("10.244.1.7", "172.18.0.3", "192.168.32.4", "100.64.3.2")
"""Where the proxy in front of the relays connects from: Docker networks, pod networks
(including CGNAT-range CNIs), provider clusters."""


def untrusted_proxy_addresses(settings: Settings) -> list[str]:
    """The proxy addresses whose X-Forwarded-For the relay would ignore (then every client
    behind the proxy shares one per-IP rate limit)."""
    networks = [
        ipaddress.ip_network(net, strict=False) for net in settings.rate_limits.trusted_proxies
    ]
    return [
        address
        for address in PROXY_ADDRESSES
        if not any(ipaddress.ip_address(address) in network for network in networks)
    ]
