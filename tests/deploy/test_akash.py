"""akash/deploy.yaml against the SDL v2.0 rules, checked offline.

There is no offline Akash validator on the package registries, so `sdl_errors` implements the
structural and cross-reference rules of the SDL v2.0 parser (akash-network's `sdl` package,
v2.go and storage.go): the allowed keys, compute profiles, placement pricing, the deployment
map (every service has a profile, a placement and a price), storage volumes and their classes
and mounts, `expose.to` references and the http_options limits (body <= 100 MiB, read/send
timeouts <= 60 s, known next_cases, `off` alone). Project rules come on top: at least three
relays, persistent storage for PostgreSQL and Redis, the relay exposed on 80/443 through nginx.

The file holds placeholders (${RELAY_IMAGE}, the secrets, the hostname) that the operator
fills in with envsubst before deploying; the tests render it the same way first.
"""

from __future__ import annotations

import copy
import posixpath
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from cluster.config import load_settings
from cluster.ledger.server import ledger_config_from_env
from tests.deploy import (
    AKASH_HA_SDL,
    AKASH_SDL,
    SECRET_NAME,
    TEST_SECRET,
    env_list_to_dict,
    load_yaml,
    load_yaml_documents,
    parse_cli,
    untrusted_proxy_addresses,
)

TOP_LEVEL = {"version", "services", "profiles", "deployment", "endpoints", "include"}
SERVICE_KEYS = {
    "image",
    "command",
    "args",
    "env",
    "expose",
    "dependencies",
    "depends-on",
    "params",
    "credentials",
}
EXPOSE_KEYS = {"port", "as", "proto", "to", "accept", "http_options"}
TO_KEYS = {"service", "global", "http_options", "ip"}
HTTP_OPTION_LIMITS: dict[str, int | None] = {
    "max_body_size": 104_857_600,
    "proxy_buffer_size": 1_048_576,
    "read_timeout": 60_000,
    "send_timeout": 60_000,
    "next_tries": None,
    "next_timeout": None,
    "next_cases": None,
}
NEXT_CASES = {"error", "timeout", "500", "502", "503", "504", "403", "404", "429", "off"}
STORAGE_CLASSES = {"default", "beta1", "beta2", "beta3", "ram"}
STORAGE_ATTRIBUTES = {"persistent", "class"}
QUANTITY = re.compile(r"\d+(\.\d+)?(k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?")
SERVICE_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

PLACEHOLDERS = {
    "RELAY_IMAGE": "ghcr.io/your-org/relay-cluster:0.1.0",
    "RELAY_HOSTNAME": "relay.example.com",
    "POSTGRES_PASSWORD": TEST_SECRET,
    "REDIS_PASSWORD": TEST_SECRET,
    "DASSIE_RPC_TOKEN": TEST_SECRET,
}
"""What an operator exports before `envsubst` (docs/DEPLOY.md); secrets are generated."""


# --- rendering like `envsubst '${A} ${B}'` ------------------------------------------------------


def documented_envsubst_variables(path: Path = AKASH_SDL) -> list[str]:
    """The variable list of the envsubst command in the SDL's header comment."""
    match = re.search(r"envsubst '([^']+)'", path.read_text())
    assert match, "the SDL header no longer shows the envsubst command"
    return re.findall(r"\$\{(\w+)\}", match[1])


def envsubst(text: str, values: Mapping[str, str], names: list[str]) -> str:
    """GNU envsubst with a SHELL-FORMAT: only the listed variables, in both $X and ${X} forms."""
    for name in names:
        value = values.get(name, "")
        text = text.replace("${" + name + "}", value)
        text = re.sub(r"\$" + name + r"(?![A-Za-z0-9_])", lambda _, v=value: v, text)
    return text


def rendered_sdl(
    values: Mapping[str, str] = PLACEHOLDERS, path: Path = AKASH_SDL
) -> dict[str, Any]:
    text = envsubst(path.read_text(), values, documented_envsubst_variables(path))
    (document,) = load_yaml_documents(text)
    result: dict[str, Any] = document
    return result


# --- the SDL v2.0 rules ------------------------------------------------------------------------


def _is_positive_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return value > 0
    return isinstance(value, str) and bool(re.fullmatch(r"\d+m|\d+(\.\d+)?", value))


def _storage_volumes(storage: Any) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """name → volume of a compute profile's storage (a mapping or a list of them)."""
    errors: list[str] = []
    items = [storage] if isinstance(storage, dict) else list(storage or [])
    volumes: dict[str, dict[str, Any]] = {}
    for item in items:
        name = item.get("name", "default") if len(items) > 1 else "default"
        if name in volumes:
            errors.append(f"duplicated volume name {name}")
        volumes[name] = item
    return volumes, errors


def _check_http_options(where: str, options: Any) -> list[str]:
    errors: list[str] = []
    if not isinstance(options, dict):
        return [f"{where}: http_options must be a mapping"]
    for key, value in options.items():
        if key not in HTTP_OPTION_LIMITS:
            errors.append(f"{where}: unknown http option {key}")
        elif key == "next_cases":
            cases = list(value)
            unknown = [case for case in cases if str(case) not in NEXT_CASES]
            if unknown:
                errors.append(f"{where}: unknown next_cases {unknown}")
            if "off" in cases and len(cases) > 1:
                errors.append(f"{where}: next_cases 'off' must stand alone")
        elif not isinstance(value, int) or isinstance(value, bool) or value < 0:
            errors.append(f"{where}: {key} must be a non-negative integer")
        else:
            limit = HTTP_OPTION_LIMITS[key]
            if limit is not None and value > limit:
                errors.append(f"{where}: {key} {value} is above the limit {limit}")
    return errors


def _check_service(name: str, service: Any, services: Mapping[str, Any]) -> list[str]:
    errors: list[str] = []
    if not SERVICE_NAME.fullmatch(name):
        errors.append(f"service name {name} is not a DNS label")
    if not isinstance(service, dict):
        return [f"service {name} is not a mapping"]
    errors += [f"{name}: unknown key {key}" for key in sorted(set(service) - SERVICE_KEYS)]
    image = service.get("image")
    if not image:
        errors.append(f"{name}: no image")
    elif ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
        errors.append(f"{name}: image {image} is not pinned to a tag (providers cache images)")
    for key in ("command", "args", "env"):
        value = service.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            errors.append(f"{name}: {key} must be a list of strings")
    for entry in service.get("env", []):
        key, sep, _ = str(entry).partition("=")
        if not sep or not ENV_KEY.fullmatch(key):
            errors.append(f"{name}: env entry {entry!r} is not KEY=value")
    for expose in service.get("expose", []):
        where = f"{name}: expose {expose.get('port')}"
        errors += [f"{where}: unknown key {key}" for key in sorted(set(expose) - EXPOSE_KEYS)]
        for key in ("port", "as"):
            value = expose.get(key, 1 if key == "as" else None)
            if not isinstance(value, int) or not 0 < value < 65536:
                errors.append(f"{where}: {key} must be a TCP/UDP port number")
        if str(expose.get("proto", "tcp")).lower() not in {"tcp", "udp"}:
            errors.append(f"{where}: proto must be tcp or udp")
        if "http_options" in expose:
            errors += _check_http_options(where, expose["http_options"])
        for host in expose.get("accept", []):
            if not re.fullmatch(r"[A-Za-z0-9*]([-A-Za-z0-9.]*[A-Za-z0-9])?", str(host)):
                errors.append(f"{where}: accept host {host!r} is not a hostname")
        for to in expose.get("to", []):
            errors += [f"{where}: unknown key {key} in to" for key in sorted(set(to) - TO_KEYS)]
            target = to.get("service")
            if target is not None and target not in services:
                errors.append(f"{where}: exposed to unknown service {target}")
            if target == name:
                errors.append(f"{where}: exposed to itself")
            if target is None and not to.get("global"):
                errors.append(f"{where}: a `to` entry needs a service or global: true")
            if "http_options" in to:
                errors += _check_http_options(where, to["http_options"])
    return errors


def _check_profiles(profiles: Any) -> list[str]:
    errors: list[str] = []
    compute = profiles.get("compute") or {}
    placement = profiles.get("placement") or {}
    if not compute:
        errors.append("profiles.compute is empty")
    if not placement:
        errors.append("profiles.placement is empty")
    for name, profile in compute.items():
        resources = (profile or {}).get("resources") or {}
        cpu = (resources.get("cpu") or {}).get("units")
        if not _is_positive_number(cpu):
            errors.append(f"compute {name}: cpu.units {cpu!r} is not a positive number")
        memory = (resources.get("memory") or {}).get("size")
        if not QUANTITY.fullmatch(str(memory)):
            errors.append(f"compute {name}: memory.size {memory!r} is not a quantity")
        if "storage" not in resources:
            errors.append(f"compute {name}: no storage")
        volumes, volume_errors = _storage_volumes(resources.get("storage"))
        errors += [f"compute {name}: {error}" for error in volume_errors]
        for volume_name, volume in volumes.items():
            where = f"compute {name}: storage {volume_name}"
            if not QUANTITY.fullmatch(str(volume.get("size"))):
                errors.append(f"{where}: size {volume.get('size')!r} is not a quantity")
            attributes = volume.get("attributes") or {}
            for key in sorted(set(attributes) - STORAGE_ATTRIBUTES):
                errors.append(f"{where}: unsupported storage attribute {key}")
            persistent = str(attributes.get("persistent", False)).lower() == "true"
            storage_class = attributes.get("class")
            if storage_class is not None and storage_class not in STORAGE_CLASSES:
                errors.append(f"{where}: invalid storage class {storage_class}")
            if storage_class not in (None, "ram") and not persistent:
                errors.append(f"{where}: ephemeral storage should not set a class")
            if storage_class == "ram" and persistent:
                errors.append(f"{where}: ram volumes cannot be persistent")
    for name, group in placement.items():
        pricing = (group or {}).get("pricing") or {}
        if not pricing:
            errors.append(f"placement {name}: no pricing")
        for profile, price in pricing.items():
            if profile not in compute:
                errors.append(f"placement {name}: pricing for unknown profile {profile}")
            denom = (price or {}).get("denom")
            # Leases are paid in ACT only since the Burn-Mint Equilibrium upgrade: uakt prices
            # get no lease (docs/DEPLOY.md, "Cost").
            if denom != "uact":
                errors.append(f"placement {name}: {profile} priced in unknown denom {denom}")
            if not _is_positive_number((price or {}).get("amount")):
                errors.append(f"placement {name}: {profile} amount must be positive")
        for rule, addresses in ((group or {}).get("signedBy") or {}).items():
            if rule not in {"anyOf", "allOf"}:
                errors.append(f"placement {name}: signedBy.{rule} is not anyOf/allOf")
            for address in addresses or []:
                if not re.fullmatch(r"akash1[02-9ac-hj-np-z]{38}", str(address)):
                    errors.append(f"placement {name}: {address} is not an akash address")
    return errors


def sdl_errors(sdl: Any) -> list[str]:
    """Every violation of the SDL v2.0 structure and cross-references."""
    if not isinstance(sdl, dict):
        return ["the SDL is not a mapping"]
    errors = [f"unknown top-level key {key}" for key in sorted(set(sdl) - TOP_LEVEL)]
    if sdl.get("version") != "2.0":
        errors.append(f"version must be the string '2.0', not {sdl.get('version')!r}")
    services: dict[str, Any] = sdl.get("services") or {}
    profiles: dict[str, Any] = sdl.get("profiles") or {}
    deployment: dict[str, Any] = sdl.get("deployment") or {}
    if not services:
        errors.append("no services")
    for name, service in services.items():
        errors += _check_service(name, service, services)
    errors += _check_profiles(profiles)
    compute = profiles.get("compute") or {}
    placement = profiles.get("placement") or {}
    used_profiles: set[str] = set()
    for name in sorted(set(services) - set(deployment)):
        errors.append(f"service {name} has no deployment entry")
    for name, groups in deployment.items():
        if name not in services:
            errors.append(f"deployment {name}: no service profile named {name}")
            continue
        if not groups:
            errors.append(f"deployment {name}: no placement")
        for group, entry in (groups or {}).items():
            where = f"deployment {name}.{group}"
            profile = (entry or {}).get("profile")
            count = (entry or {}).get("count")
            if profile not in compute:
                errors.append(f"{where}: no compute profile named {profile}")
                continue
            used_profiles.add(profile)
            if group not in placement:
                errors.append(f"{where}: no placement profile named {group}")
            elif profile not in (placement[group].get("pricing") or {}):
                errors.append(f"{where}: no pricing for profile {profile}")
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                errors.append(f"{where}: count must be a positive integer, not {count!r}")
            volumes, _ = _storage_volumes(compute[profile]["resources"].get("storage"))
            storage_params = ((services[name].get("params") or {}).get("storage")) or {}
            mounts: dict[str, str] = {}
            for volume, params in storage_params.items():
                if volume not in volumes:
                    errors.append(f"{where}: params.storage.{volume}: no such volume in {profile}")
                mount = (params or {}).get("mount", "")
                if not posixpath.isabs(mount):
                    errors.append(f"{where}: params.storage.{volume}.mount must be absolute")
                if mount in mounts:
                    errors.append(f"{where}: mount {mount} already used by {mounts[mount]}")
                mounts[mount] = volume
            for volume, spec in volumes.items():
                attributes = spec.get("attributes") or {}
                if str(attributes.get("persistent", False)).lower() == "true":
                    if volume not in storage_params:
                        errors.append(
                            f"{where}: persistent volume {volume} needs "
                            f"services.{name}.params.storage.{volume}.mount"
                        )
                    if count != 1:
                        errors.append(f"{where}: a service with a persistent volume needs count 1")
    for profile in sorted(set(compute) - used_profiles):
        errors.append(f"compute profile {profile} is used by no deployment")
    groups = {group for entry in deployment.values() for group in (entry or {})}
    if len(groups) > 1:
        errors.append(f"services are split over placements {sorted(groups)}: they cannot talk")
    return errors


# --- the file ----------------------------------------------------------------------------------


def test_the_sdl_is_valid_sdl_v2() -> None:
    assert sdl_errors(rendered_sdl()) == []


def test_the_raw_file_is_valid_apart_from_the_placeholders() -> None:
    raw = load_yaml(AKASH_SDL)
    assert sorted(sdl_errors(raw)) == [
        "dassie: image ${RELAY_IMAGE} is not pinned to a tag (providers cache images)",
        "nginx: expose 8080: accept host '${RELAY_HOSTNAME}' is not a hostname",
        "relay: image ${RELAY_IMAGE} is not pinned to a tag (providers cache images)",
    ]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: s.update(version=2.0), "version must be the string '2.0'"),
        (lambda s: s.update(services_=1), "unknown top-level key services_"),
        (lambda s: s["profiles"]["compute"].pop("relay"), "no compute profile named relay"),
        (
            lambda s: s["profiles"]["placement"]["akash"]["pricing"].pop("redis"),
            "deployment redis.akash: no pricing for profile redis",
        ),
        (lambda s: s["deployment"].pop("dassie"), "service dassie has no deployment entry"),
        (lambda s: s["deployment"]["relay"]["akash"].update(count=0), "count must be a positive"),
        (
            lambda s: s["deployment"]["nginx"].update(elsewhere={"profile": "nginx", "count": 1}),
            "no placement profile named elsewhere",
        ),
        (
            lambda s: s["services"]["nginx"]["expose"][0]["http_options"].update(
                read_timeout=3_600_000
            ),
            "read_timeout 3600000 is above the limit 60000",
        ),
        (
            lambda s: s["services"]["nginx"]["expose"][0]["http_options"].update(
                next_cases=["off", "error"]
            ),
            "next_cases 'off' must stand alone",
        ),
        (
            lambda s: s["services"]["relay"]["expose"][0]["to"].append({"service": "web"}),
            "exposed to unknown service web",
        ),
        (
            lambda s: s["profiles"]["compute"]["postgres"]["resources"]["storage"][1][
                "attributes"
            ].update({"class": "fast"}),
            "invalid storage class fast",
        ),
        (
            lambda s: s["profiles"]["compute"]["relay"]["resources"]["storage"].update(
                attributes={"class": "beta3"}
            ),
            "ephemeral storage should not set a class",
        ),
        (
            lambda s: s["services"]["postgres"].pop("params"),
            "persistent volume data needs services.postgres.params.storage.data.mount",
        ),
        (
            lambda s: s["services"]["redis"]["params"]["storage"]["data"].update(mount="data"),
            "mount must be absolute",
        ),
        (
            lambda s: s["deployment"]["postgres"]["akash"].update(count=2),
            "a service with a persistent volume needs count 1",
        ),
        (lambda s: s["services"]["relay"].update(image="relay:latest"), "is not pinned"),
        (lambda s: s["services"]["relay"].update(environment=["A=1"]), "unknown key environment"),
        (lambda s: s["services"]["relay"]["env"].append("NOVALUE"), "is not KEY=value"),
        (
            lambda s: s["profiles"]["placement"]["akash"]["pricing"]["relay"].update(denom="akt"),
            "priced in unknown denom akt",
        ),
        (
            lambda s: s["profiles"]["compute"]["relay"]["resources"]["memory"].update(size="1GB"),
            "memory.size '1GB' is not a quantity",
        ),
        (
            lambda s: s["profiles"]["compute"].update(spare=s["profiles"]["compute"]["relay"]),
            "compute profile spare is used by no deployment",
        ),
    ],
)
def test_the_validator_catches_a_broken_sdl(mutate: Any, expected: str) -> None:
    sdl = copy.deepcopy(rendered_sdl())
    mutate(sdl)
    errors = "\n".join(sdl_errors(sdl))
    assert expected in errors, errors


# --- the project's rules -----------------------------------------------------------------------


def test_at_least_three_relays_behind_nginx_on_80_and_443() -> None:
    sdl = rendered_sdl()
    assert sdl["deployment"]["relay"]["akash"]["count"] >= 3
    (public,) = [
        (name, expose)
        for name, service in sdl["services"].items()
        for expose in service.get("expose", [])
        if any(to.get("global") for to in expose.get("to", []))
    ]
    name, expose = public
    assert name == "nginx"
    # as: 80 is HTTP on 80 and HTTPS on 443 at the provider's ingress.
    assert expose["as"] == 80
    assert expose["accept"] == [PLACEHOLDERS["RELAY_HOSTNAME"]]
    options = expose["http_options"]
    relay_env = env_list_to_dict(sdl["services"]["relay"]["env"])
    settings = load_settings(env=relay_env)
    # The ingress' read timeout must outlast the relay's WebSocket ping interval.
    assert options["read_timeout"] > 1000 * settings.network.ping_interval
    assert options["send_timeout"] > 1000 * settings.network.ping_interval
    assert options["max_body_size"] >= settings.limits.max_message_bytes
    assert sdl["services"]["relay"]["expose"] == [{"port": 8008, "to": [{"service": "nginx"}]}]


def test_postgres_and_redis_keep_their_data_on_persistent_storage() -> None:
    sdl = rendered_sdl()
    mounts = {"postgres": "/var/lib/postgresql/data", "redis": "/data"}
    for name, mount in mounts.items():
        storage = sdl["profiles"]["compute"][name]["resources"]["storage"]
        (persistent,) = [v for v in storage if (v.get("attributes") or {}).get("persistent")]
        assert persistent["attributes"]["class"] in {"beta2", "beta3"}
        volume = sdl["services"][name]["params"]["storage"][persistent["name"]]
        assert volume["mount"] == mount
    postgres_env = env_list_to_dict(sdl["services"]["postgres"]["env"])
    assert postgres_env["PGDATA"].startswith(mounts["postgres"] + "/")


def test_every_price_is_in_uact() -> None:
    pricing = rendered_sdl()["profiles"]["placement"]["akash"]["pricing"]
    assert {price["denom"] for price in pricing.values()} == {"uact"}
    assert all(
        isinstance(price["amount"], int) and price["amount"] > 0 for price in pricing.values()
    )


def test_the_app_services_run_commands_of_the_package() -> None:
    services = rendered_sdl()["services"]
    assert services["relay"]["image"] == services["dassie"]["image"] == PLACEHOLDERS["RELAY_IMAGE"]
    assert "command" not in services["relay"] and "command" not in services["dassie"]
    assert parse_cli(services["relay"]["args"]).command == "serve"
    ledger = parse_cli(services["dassie"]["args"])
    assert ledger.command == "ledger"
    assert services["dassie"]["expose"][0]["port"] == ledger.port


def test_the_relay_and_ledger_environments_are_valid() -> None:
    services = rendered_sdl()["services"]
    settings = load_settings(env=env_list_to_dict(services["relay"]["env"]))
    assert settings.network.host == "0.0.0.0"
    assert settings.network.public_url == f"wss://{PLACEHOLDERS['RELAY_HOSTNAME']}"
    assert settings.dassie.url == "ws://dassie:5000/rpc"
    assert untrusted_proxy_addresses(settings) == []
    assert services["relay"]["expose"][0]["port"] == settings.network.port
    url, token = ledger_config_from_env(env_list_to_dict(services["dassie"]["env"]))
    assert url == settings.database.url
    assert token == settings.dassie.token
    args = services["postgres"]["args"]
    max_connections = int(next(a.split("=")[1] for a in args if a.startswith("max_connections")))
    relays = rendered_sdl()["deployment"]["relay"]["akash"]["count"]
    needed = relays * settings.network.workers * settings.database.pool_max + 8 + 10
    assert max_connections > needed


def test_secrets_are_placeholders_and_the_documented_render_fills_them_all() -> None:
    text = AKASH_SDL.read_text()
    names = documented_envsubst_variables()
    used = set(re.findall(r"\$\{(\w+)\}", text))
    assert used == set(names) == set(PLACEHOLDERS)
    for entry in (
        entry
        for service in load_yaml(AKASH_SDL)["services"].values()
        for entry in service.get("env", [])
    ):
        key, _, value = entry.partition("=")
        if SECRET_NAME.search(key):
            assert re.fullmatch(r"\$\{\w+\}", value), f"{key} holds a literal value"
    rendered = envsubst(text, PLACEHOLDERS, names)
    assert "${" not in rendered
    # nginx's own variables survive the render (only the listed variables are substituted)
    for variable in ("$remote_addr", "$http_upgrade", "$connection_upgrade", "$http_host"):
        assert variable in rendered


def test_an_unlisted_variable_would_survive_the_render() -> None:
    text = AKASH_SDL.read_text().replace("${RELAY_HOSTNAME}", "${RELAY_DOMAIN}", 1)
    assert "${RELAY_DOMAIN}" in envsubst(text, PLACEHOLDERS, documented_envsubst_variables())


def test_the_cost_table_in_the_docs_matches_the_sdl() -> None:
    sdl = rendered_sdl()
    pricing = sdl["profiles"]["placement"]["akash"]["pricing"]
    docs = (AKASH_SDL.parents[1] / "docs" / "DEPLOY.md").read_text()
    rows = re.findall(r"^\| (\w+) \| (\d+) \| (\d+) \| ([\d,]+) \| ([\d.]+) \|$", docs, re.M)
    table = {
        name: (int(amount), int(count), float(month)) for name, amount, count, _, month in rows
    }
    assert set(table) == set(sdl["deployment"])
    blocks_per_month = 30 * 24 * 3600 // 6
    for name, (amount, count, month) in table.items():
        assert amount == pricing[name]["amount"], name
        assert count == sdl["deployment"][name]["akash"]["count"], name
        assert month == pytest.approx(amount * count * blocks_per_month / 1_000_000), name
    total = re.search(r"^\| total \| \| \| ([\d,]+) \| ([\d.]+) \|$", docs, re.M)
    assert total is not None
    per_block = sum(amount * count for amount, count, _ in table.values())
    assert int(total[1].replace(",", "")) == per_block
    assert float(total[2]) == pytest.approx(per_block * blocks_per_month / 1_000_000)


def test_the_docs_render_the_sdl_with_the_same_variable_list() -> None:
    """Each envsubst command in docs/DEPLOY.md renders the SDL it reads with that SDL's list."""
    docs = (AKASH_SDL.parents[1] / "docs" / "DEPLOY.md").read_text()
    listed = re.findall(r"envsubst '([^']+)'[\s\\]*< (akash/[\w.-]+)", docs)
    assert {path for _, path in listed} == {"akash/deploy.yaml", "akash/deploy-ha.yaml"}
    for variables, path in listed:
        expected = documented_envsubst_variables(AKASH_SDL.parents[1] / path)
        assert re.findall(r"\$\{(\w+)\}", variables) == expected, path


def test_metrics_are_only_on_the_relays_unexposed_private_port() -> None:
    """The relays serve /metrics on a private port that no `expose` entry opens; nginx (the
    only client of port 8008, which refuses /metrics) refuses it too (tests/deploy/test_nginx)."""
    relay = rendered_sdl()["services"]["relay"]
    network = load_settings(env=env_list_to_dict(relay["env"])).network
    assert network.metrics_port not in (0, network.port)
    assert [entry["port"] for entry in relay["expose"]] == [network.port]
    assert all("global" not in target for entry in relay["expose"] for target in entry["to"])


# --- akash/deploy-ha.yaml: deploy.yaml plus a read replica and Redis Sentinel -------------------

HA_PLACEHOLDERS = {**PLACEHOLDERS, "POSTGRES_REPLICATION_PASSWORD": TEST_SECRET}
HA_SERVICES = {"postgres-replica", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
HA_RELAY_SETTINGS = {
    "RELAY_DATABASE__REPLICA_URLS",
    "RELAY_REDIS__SENTINELS",
    "RELAY_REDIS__SENTINEL_SERVICE",
    "RELAY_REDIS__SENTINEL_PASSWORD",
}


def rendered_ha() -> dict[str, Any]:
    return rendered_sdl(HA_PLACEHOLDERS, AKASH_HA_SDL)


def exposed_to(sdl: Mapping[str, Any], service: str, port: int) -> set[str]:
    return {
        to["service"]
        for expose in sdl["services"][service].get("expose", [])
        if expose["port"] == port
        for to in expose.get("to", [])
        if "service" in to
    }


def test_the_ha_sdl_is_valid_sdl_v2() -> None:
    assert sdl_errors(rendered_ha()) == []
    raw = load_yaml(AKASH_HA_SDL)
    assert sorted(sdl_errors(raw)) == [
        "dassie: image ${RELAY_IMAGE} is not pinned to a tag (providers cache images)",
        "nginx: expose 8080: accept host '${RELAY_HOSTNAME}' is not a hostname",
        "relay: image ${RELAY_IMAGE} is not pinned to a tag (providers cache images)",
    ]


def test_the_ha_sdl_is_deploy_yaml_plus_the_optional_services() -> None:
    """What deploy.yaml deploys is deployed the same way: nginx and the ledger unchanged, the
    relay with four more settings, the datastores with what replication needs added."""
    base, ha = rendered_sdl(), rendered_ha()
    assert set(ha["services"]) == set(base["services"]) | HA_SERVICES
    assert ha["services"]["nginx"] == base["services"]["nginx"]  # nginx -t ran on this text
    assert ha["services"]["dassie"] == base["services"]["dassie"]
    relay, base_relay = ha["services"]["relay"], base["services"]["relay"]
    assert {k: v for k, v in relay.items() if k != "env"} == {
        k: v for k, v in base_relay.items() if k != "env"
    }
    env, base_env = env_list_to_dict(relay["env"]), env_list_to_dict(base_relay["env"])
    assert set(env) - set(base_env) == HA_RELAY_SETTINGS
    assert {k: env[k] for k in base_env} == base_env
    for name in ("postgres", "redis"):
        service, base_service = ha["services"][name], base["services"][name]
        assert service["image"] == base_service["image"]
        assert service["params"] == base_service["params"]
        assert set(base_service["env"]) <= set(service["env"]), name
        assert exposed_to(base, name, 5432 if name == "postgres" else 6379) <= exposed_to(
            ha, name, 5432 if name == "postgres" else 6379
        )
    for name, profile in base["profiles"]["compute"].items():
        assert ha["profiles"]["compute"][name] == profile
    for name, price in base["profiles"]["placement"]["akash"]["pricing"].items():
        assert ha["profiles"]["placement"]["akash"]["pricing"][name] == price
    for name, entry in base["deployment"].items():
        assert ha["deployment"][name] == entry
    assert (
        ha["profiles"]["placement"]["akash"]["signedBy"]
        == base["profiles"]["placement"]["akash"]["signedBy"]
    )


def test_the_ha_relays_read_the_replica_and_follow_the_sentinels() -> None:
    sdl = rendered_ha()
    services = sdl["services"]
    settings = load_settings(env=env_list_to_dict(services["relay"]["env"]))
    assert untrusted_proxy_addresses(settings) == []
    (url,) = settings.database.replica_urls
    replica, primary = (
        re.match(r"postgresql://(.*)@([\w-]+):(\d+)(/.*)", url),
        re.match(r"postgresql://(.*)@([\w-]+):(\d+)(/.*)", settings.database.url),
    )
    assert replica is not None and primary is not None
    assert replica[2] == "postgres-replica" and replica[2] in services
    assert (replica[1], replica[4]) == (primary[1], primary[4])  # the same role and database
    assert "relay" in exposed_to(sdl, "postgres-replica", int(replica[3]))
    sentinels = [f"sentinel-{i}" for i in (1, 2, 3)]
    assert settings.redis.sentinels == [f"{name}:26379" for name in sentinels]
    assert settings.redis.sentinel_password == TEST_SECRET
    for name in sentinels:
        others = set(sentinels) - {name}
        assert exposed_to(sdl, name, 26379) == {"relay", "redis", "redis-replica"} | others
        script = services[name]["args"][0]
        conf = [
            line.split()
            for line in script.split("<<EOF\n", 1)[1].split("\nEOF\n", 1)[0].splitlines()
        ]
        (monitor,) = [line for line in conf if line[:2] == ["sentinel", "monitor"]]
        assert monitor[2] == settings.redis.sentinel_service and monitor[4:] == ["6379", "2"]
        assert "master=redis" in script  # the first master, as the relays' REDIS_URL names it
        assert ["sentinel", "announce-ip", name] in conf
        assert ["requirepass", TEST_SECRET] in conf and [
            "sentinel",
            "auth-pass",
            "relay",
            TEST_SECRET,
        ] in conf
        assert sdl["deployment"][name]["akash"]["count"] == 1
    for name in ("redis", "redis-replica"):
        other = {"redis": "redis-replica", "redis-replica": "redis"}[name]
        assert exposed_to(sdl, name, 6379) == {"relay", other, *sentinels}
        assert f"--replica-announce-ip {name}" in services[name]["args"][0]


def test_the_ha_replica_follows_the_primary() -> None:
    raw = load_yaml(AKASH_HA_SDL)
    sdl = rendered_ha()
    primary, replica = sdl["services"]["postgres"], sdl["services"]["postgres-replica"]
    env, primary_env = env_list_to_dict(replica["env"]), env_list_to_dict(primary["env"])
    info = dict(item.split("=", 1) for item in env["PRIMARY_CONNINFO"].split())
    assert info["host"] == "postgres" and info["port"] == "5432"
    assert "postgres-replica" in exposed_to(sdl, "postgres", 5432)
    assert info["user"] == primary_env["POSTGRES_REPLICATION_USER"]
    assert env["REPLICATION_PASSWORD"] == primary_env["POSTGRES_REPLICATION_PASSWORD"]
    assert env["PGDATA"] == primary_env["PGDATA"]
    # the primary writes postgres/init-replication.sh, the same text, before initdb runs
    script = raw["services"]["postgres"]["command"][2]
    embedded = script.split("<<'INIT'\n", 1)[1].split("\nINIT\n", 1)[0] + "\n"
    assert embedded == (AKASH_SDL.parents[1] / "postgres" / "init-replication.sh").read_text()
    assert (
        "/docker-entrypoint-initdb.d/" in script
        and 'exec docker-entrypoint.sh postgres "$@"' in script
    )
    steps = replica["command"][2]
    for step in ("pg_basebackup", "standby.signal", "chown postgres", "primary_conninfo="):
        assert step in steps, step
    assert 'exec docker-entrypoint.sh postgres "$@"' in steps
    args = {a for a in replica["args"]}
    assert args == set(primary["args"])  # the same settings and sizing (hot standby)
    storage = sdl["profiles"]["compute"]["postgres-replica"]["resources"]["storage"]
    assert any((v.get("attributes") or {}).get("persistent") for v in storage)
    assert replica["params"] == primary["params"]
    # connections: every worker's pool on each server, plus one lag-check connection each
    settings = load_settings(env=env_list_to_dict(sdl["services"]["relay"]["env"]))
    relays = sdl["deployment"]["relay"]["akash"]["count"]
    workers = relays * settings.network.workers
    max_connections = int(
        next(a.split("=")[1] for a in primary["args"] if a.startswith("max_connections"))
    )
    assert max_connections > workers * (settings.database.pool_max + 1) + 8 + 10


def test_the_ha_secrets_are_placeholders_rendered_by_the_documented_list() -> None:
    text = AKASH_HA_SDL.read_text()
    names = documented_envsubst_variables(AKASH_HA_SDL)
    assert set(re.findall(r"\$\{(\w+)\}", text)) == set(names) == set(HA_PLACEHOLDERS)
    assert names[: len(documented_envsubst_variables())] == documented_envsubst_variables()
    for service in load_yaml(AKASH_HA_SDL)["services"].values():
        for entry in service.get("env", []):
            key, _, value = entry.partition("=")
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{\w+\}", value), f"{key} holds a literal value"
    rendered = envsubst(text, HA_PLACEHOLDERS, names)
    assert "${" not in rendered.replace("${POSTGRES_REPLICATION_USER:-replicator}", "")
    for variable in ("$remote_addr", "$master", "$found", "$PGDATA", "$conninfo", "$POSTGRES_USER"):
        assert variable in rendered, variable


def test_the_ha_shell_scripts_parse() -> None:
    scripts = []
    for name, service in rendered_ha()["services"].items():
        command, args = service.get("command", []), service.get("args", [])
        if command[:2] == ["sh", "-c"]:
            scripts.append((name, command[2] if len(command) > 2 else args[0]))
    assert len(scripts) == 8
    for name, script in scripts:
        result = subprocess.run(["sh", "-n"], input=script, capture_output=True, text=True)
        assert result.returncode == 0, (name, result.stderr)
