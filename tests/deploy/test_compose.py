"""docker-compose.cluster.yml: valid against the Compose Specification's JSON schema (the copy
check-jsonschema ships), internally consistent (images, build, depends_on, volumes, networks,
bind mounts, URLs between services), secrets only from the environment, and an environment
that the relay's own settings loader and the ledger accept.

Interpolation follows the compose specification (tests.deploy.interpolate) with the values of
.env.example, empty secrets filled in as an operator would.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest

from cluster.config import Settings, load_settings
from cluster.ledger.server import ledger_config_from_env
from tests.deploy import (
    COMPOSE_FILE,
    COMPOSE_NGINX_CONF,
    ENV_EXAMPLE,
    ROOT,
    SECRET_NAME,
    TEST_SECRET,
    InterpolationError,
    interpolate,
    interpolate_tree,
    load_yaml,
    parse_cli,
    parse_env_file,
    untrusted_proxy_addresses,
    with_test_secrets,
)
from tests.deploy.test_dockerfile import runtime_stage
from tests.deploy.test_postgres_settings import CONF, parse_args, parse_conf, target_errors

CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


@functools.cache
def compose_schema() -> dict[str, Any]:
    """The Compose Specification schema as vendored by check-jsonschema (offline)."""
    text = (
        resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    ).read_text()
    schema: dict[str, Any] = json.loads(text)
    assert schema.get("title") == "Compose Specification"
    return schema


def example_env() -> dict[str, str]:
    return with_test_secrets(parse_env_file(ENV_EXAMPLE))


def raw_compose() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(COMPOSE_FILE)
    return document


def compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    document: dict[str, Any] = interpolate_tree(
        raw_compose(), example_env() if env is None else env
    )
    return document


def schema_errors(document: Mapping[str, Any]) -> list[str]:
    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    ]


def _depends_on(service: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    depends = service.get("depends_on", {})
    if isinstance(depends, list):
        return {name: {"condition": "service_started"} for name in depends}
    return {name: dict(spec or {}) for name, spec in depends.items()}


def _networks(service: Mapping[str, Any]) -> set[str]:
    networks = service.get("networks", ["default"])
    return set(networks)  # a list, or a mapping of network name → options


def _volume_source(entry: Any) -> tuple[str, str]:
    """(type, source) of a service volume in short or long syntax."""
    if isinstance(entry, dict):
        return entry.get("type", "volume"), str(entry.get("source", ""))
    source = str(entry).split(":")[0]
    if source.startswith((".", "/", "~")):
        return "bind", source
    return "volume", source


def _healthcheck_enabled(service: Mapping[str, Any]) -> bool:
    healthcheck = service.get("healthcheck")
    return bool(healthcheck) and not healthcheck.get("disable", False)


def reference_errors(document: Mapping[str, Any], base_dir: Path = ROOT) -> list[str]:
    """Everything in the file that points at something that is not there."""
    errors: list[str] = []
    services: dict[str, Any] = document.get("services", {})
    volumes = set(document.get("volumes", {}) or {})
    networks = set(document.get("networks", {}) or {}) | {"default"}
    used_volumes: set[str] = set()
    used_networks: set[str] = set()
    for name, service in services.items():
        image = service.get("image")
        if not image:
            errors.append(f"{name}: no image")
        elif ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
            errors.append(f"{name}: image {image} is not pinned to a tag")
        build = service.get("build")
        if build:
            context = base_dir / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
            if not (context / (dockerfile or "Dockerfile")).is_file():
                errors.append(f"{name}: build context {context} has no {dockerfile}")
        for target, spec in _depends_on(service).items():
            if target not in services:
                errors.append(f"{name}: depends_on unknown service {target}")
                continue
            condition = spec.get("condition", "service_started")
            if condition not in CONDITIONS:
                errors.append(f"{name}: depends_on {target}: unknown condition {condition}")
            if condition == "service_healthy" and not _healthcheck_enabled(services[target]):
                errors.append(f"{name}: waits for {target} to be healthy, which has no check")
            if condition == "service_completed_successfully" and str(
                services[target].get("restart", "no")
            ) not in {"no", "on-failure"}:
                errors.append(f"{name}: waits for {target} to complete, but it restarts")
            if services[target].get("profiles") and spec.get("required", True):
                errors.append(
                    f"{name}: depends on {target}, which only runs with profile "
                    f"{services[target]['profiles']}: add `required: false`"
                )
        for entry in service.get("volumes", []):
            kind, source = _volume_source(entry)
            if kind == "volume":
                used_volumes.add(source)
                if source not in volumes:
                    errors.append(f"{name}: volume {source} is not declared")
            elif kind == "bind" and not (base_dir / source).exists():
                errors.append(f"{name}: bind-mount source {source} does not exist")
        for network in _networks(service):
            used_networks.add(network)
            if network not in networks:
                errors.append(f"{name}: network {network} is not declared")
        for env_file in service.get("env_file", []) or []:
            path = env_file if isinstance(env_file, str) else env_file["path"]
            if not (base_dir / path).exists():
                errors.append(f"{name}: env_file {path} does not exist")
        environment = service.get("environment", {})
        if isinstance(environment, dict):
            for key, value in environment.items():
                if not isinstance(value, str) or "://" not in value:
                    continue
                host = urlsplit(value).hostname
                if host in services and not _networks(services[host]) & _networks(service):
                    errors.append(f"{name}: {key} points at {host}, which shares no network")
                elif host and host not in services and host != "localhost" and "." not in host:
                    errors.append(f"{name}: {key} points at unknown service {host}")
    errors += [f"volume {v} is declared but never used" for v in sorted(volumes - used_volumes)]
    errors += [
        f"network {n} is declared but never used"
        for n in sorted(networks - used_networks - {"default"})
    ]
    return errors


# --- schema and references ---------------------------------------------------------------------


def test_the_compose_file_matches_the_compose_specification() -> None:
    assert schema_errors(compose()) == []


def test_the_compose_file_has_no_dangling_references() -> None:
    assert reference_errors(compose()) == []


def test_the_schema_catches_a_broken_document() -> None:
    document = compose()
    relay = document["services"]["relay"]
    relay["deploy"]["replicas"] = True
    relay["depends_on"]["redis"]["condition"] = "service_ready"
    relay["healthcheck"]["retries"] = [3]
    document["volumes"]["pgdata"] = {"driver": 5}
    document["servics"] = {}
    errors = "\n".join(schema_errors(document))
    for expected in (
        "services/relay/deploy/replicas: True is not of type 'integer', 'string'",
        "services/relay/depends_on: ",
        "services/relay/healthcheck/retries: [3] is not of type",
        "volumes/pgdata/driver: 5 is not of type 'string'",
        "'servics' does not match any of the regexes",
    ):
        assert expected in errors, (expected, errors)
    document = compose()
    document["services"]["relay"]["restart_policy"] = "always"
    assert schema_errors(document) == [
        "services/relay: Unevaluated properties are not allowed ('restart_policy' was unexpected)"
    ]


def test_the_reference_check_catches_dangling_references() -> None:
    document = compose()
    relay = document["services"]["relay"]
    relay["depends_on"]["cache"] = {"condition": "service_healthy"}
    relay["volumes"] = ["relaydata:/var/lib/relay", "./nginx/missing.conf:/x:ro"]
    relay["networks"].append("public")
    relay["environment"]["REDIS_URL"] = "redis://valkey:6379/0"
    document["services"]["nginx"]["depends_on"]["migrate"] = {"condition": "service_healthy"}
    del document["services"]["relay"]["depends_on"]["dassie"]["required"]
    document["volumes"]["orphan"] = {}
    errors = "\n".join(reference_errors(document))
    for expected in (
        "relay: depends_on unknown service cache",
        "relay: volume relaydata is not declared",
        "relay: bind-mount source ./nginx/missing.conf does not exist",
        "relay: network public is not declared",
        "relay: REDIS_URL points at unknown service valkey",
        "nginx: waits for migrate to be healthy, which has no check",
        "relay: depends on dassie, which only runs with profile ['ledger']",
        "volume orphan is declared but never used",
    ):
        assert expected in errors, (expected, errors)
    document = compose()
    document["services"]["postgres"]["image"] = "postgres:latest"
    document["services"]["redis"]["image"] = "redis"
    errors = "\n".join(reference_errors(document))
    assert "postgres: image postgres:latest is not pinned" in errors
    assert "redis: image redis is not pinned" in errors


def test_interpolation_follows_the_compose_specification() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $$x $SET", env) == (
        "v d  d $x v"
    )
    assert interpolate("${SET:+r}|${EMPTY:+r}|${EMPTY+r}", env) == "r||r"
    with pytest.raises(InterpolationError, match="EMPTY is missing: say so"):
        interpolate("${EMPTY:?say so}", env)
    assert interpolate("${EMPTY?fine}", env) == ""


# --- secrets and variables ---------------------------------------------------------------------


def test_every_secret_is_required_from_the_environment_and_none_is_committed() -> None:
    text = COMPOSE_FILE.read_text()
    placeholders = re.findall(r"\$\{(\w+)([^}]*)\}", text)
    secrets = {name for name, _ in placeholders if SECRET_NAME.search(name)}
    assert secrets == {
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "DASSIE_RPC_TOKEN",
        "POSTGRES_REPLICATION_PASSWORD",
    }
    for name, rest in placeholders:
        if name in secrets:
            assert rest.startswith(":?"), f"${{{name}{rest}}} must be ${{{name}:?...}}"
    for key, value in raw_compose()["services"]["relay"]["environment"].items():
        if SECRET_NAME.search(key):
            assert str(value).startswith("${"), f"{key} has a literal value"
    example = parse_env_file(ENV_EXAMPLE)
    assert {key: example[key] for key in secrets} == dict.fromkeys(secrets, "")


def test_compose_refuses_to_start_without_the_secrets() -> None:
    with pytest.raises(InterpolationError, match="POSTGRES_PASSWORD is missing"):
        compose(parse_env_file(ENV_EXAMPLE))


def test_every_variable_is_documented_in_env_example() -> None:
    used: set[str] = set()
    interpolate_tree(raw_compose(), example_env(), used)
    documented = set(parse_env_file(ENV_EXAMPLE))
    assert used - documented == set(), "variables the compose file reads but .env.example lacks"
    unused = documented - used - {"COMPOSE_FILE", "COMPOSE_PROFILES"}
    assert unused == set(), "variables in .env.example that the compose file never reads"
    assert parse_env_file(ENV_EXAMPLE)["COMPOSE_FILE"] == COMPOSE_FILE.name


# --- what the services run ---------------------------------------------------------------------


def image_environment() -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in runtime_stage().instructions:
        if ins.keyword == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", ins.value))
    return env


def test_one_image_runs_relay_ledger_and_migrations() -> None:
    services = compose()["services"]
    images = {services[name]["image"] for name in ("relay", "dassie", "migrate")}
    assert len(images) == 1
    for name in ("relay", "dassie", "migrate"):
        assert services[name]["build"]["context"] == "."
        parse_cli(services[name]["command"])
    assert [parse_cli(services[n]["command"]).command for n in ("relay", "dassie", "migrate")] == [
        "serve",
        "ledger",
        "migrate",
    ]
    assert services["migrate"]["restart"] == "no"


def test_the_relay_environment_is_valid_for_the_relay() -> None:
    relay = compose()["services"]["relay"]
    settings = load_settings(env={**image_environment(), **relay["environment"]})
    assert settings.network.host == "0.0.0.0"
    assert settings.database.url.startswith("postgresql://relay:")
    assert settings.dassie.url == "ws://dassie:5000/rpc"
    assert untrusted_proxy_addresses(settings) == []
    assert untrusted_proxy_addresses(load_settings(env={})) != []  # the default: loopback only
    assert f":{settings.network.port}/health" in " ".join(relay["healthcheck"]["test"])
    assert f"server relay:{settings.network.port} " in COMPOSE_NGINX_CONF.read_text()


def test_a_misspelt_relay_setting_is_caught() -> None:
    relay = compose()["services"]["relay"]
    with pytest.raises(ValueError, match="network"):
        load_settings(env={**relay["environment"], "RELAY_NETWORK__WORKRES": "2"})


def test_the_ledger_environment_is_valid_for_the_ledger() -> None:
    dassie = compose()["services"]["dassie"]
    url, token = ledger_config_from_env(dassie["environment"])
    assert urlsplit(url).hostname == "postgres"
    assert len(token) >= 32
    args = parse_cli(dassie["command"])
    assert args.port == 5000
    assert f":{args.port}/health" in " ".join(dassie["healthcheck"]["test"])


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)", text)
    assert match, text
    return int(match[1]) * {"ms": 0.001, "s": 1, "m": 60}[match[2]]


def test_relays_get_time_to_drain_before_docker_kills_them() -> None:
    relay = compose()["services"]["relay"]
    settings = load_settings(env={**image_environment(), **relay["environment"]})
    graceful = settings.network.shutdown_timeout + 5  # gunicorn graceful_timeout
    assert _seconds(relay["stop_grace_period"]) > graceful


def test_postgres_allows_enough_connections() -> None:
    services = compose()["services"]
    relay = services["relay"]
    settings = load_settings(env={**image_environment(), **relay["environment"]})
    replicas = relay["deploy"]["replicas"]
    assert replicas >= 3
    needed = replicas * settings.network.workers * settings.database.pool_max + 8 + 10
    command = services["postgres"]["command"]
    max_connections = int(next(a.split("=")[1] for a in command if a.startswith("max_conn")))
    assert max_connections > needed


def test_the_start_order_is_health_gated() -> None:
    services = compose()["services"]

    def conditions(name: str) -> dict[str, str]:
        return {t: s["condition"] for t, s in _depends_on(services[name]).items()}

    assert conditions("migrate") == {"postgres": "service_healthy"}
    assert conditions("dassie") == {"postgres": "service_healthy"}
    assert conditions("relay") == {
        "migrate": "service_completed_successfully",
        "postgres": "service_healthy",
        "redis": "service_healthy",
        "dassie": "service_healthy",
        "sentinel-1": "service_healthy",
        "sentinel-2": "service_healthy",
    }
    assert conditions("nginx") == {"relay": "service_healthy"}
    for name in ("postgres", "redis", "dassie", "relay", "nginx"):
        assert _healthcheck_enabled(services[name]), name
    assert conditions("postgres-replica") == {"postgres": "service_healthy"}
    for name in ("redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"):
        assert conditions(name) == {"redis": "service_healthy"}, name


def test_data_lives_on_named_volumes_and_nginx_uses_this_repository() -> None:
    services = compose()["services"]
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "redisdata:/data" in services["redis"]["volumes"]
    assert "./nginx/compose.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]
    published = services["nginx"]["ports"][0]
    assert published.endswith(":8080") and "listen 8080" in COMPOSE_NGINX_CONF.read_text()


def test_metrics_are_only_on_the_relays_unpublished_private_port() -> None:
    """The relays serve /metrics on a private port inside the compose networks, never published;
    nginx refuses /metrics (tests/deploy/test_nginx)."""
    relay = compose()["services"]["relay"]
    network = load_settings(env={**image_environment(), **relay["environment"]}).network
    assert network.metrics_port not in (0, network.port)
    assert "ports" not in relay


# --- the optional profiles: read replica (`replicas`) and Redis Sentinel (`sentinel`) -----------


def documented_options() -> dict[str, str]:
    """The commented `# KEY=value` lines of .env.example: the values that turn the optional
    profiles on, exactly as the operator is told to set them."""
    options = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"# ([A-Z][A-Z0-9_]*)=(.*)", line)
        if match:
            assert match[1] not in options, f"{match[1]} documented twice in .env.example"
            options[match[1]] = match[2]
    return options


def env_with_options() -> dict[str, str]:
    return {**example_env(), **documented_options()}


def relay_settings(env: Mapping[str, str]) -> Settings:
    relay = compose(env)["services"]["relay"]
    return load_settings(env={**image_environment(), **relay["environment"]})


def parse_conninfo(text: str) -> dict[str, str]:
    """libpq `key=value` pairs (no quoted values, which the compose file does not use)."""
    pairs = [item.partition("=") for item in text.split()]
    assert all(sep for _, sep, _ in pairs), text
    return {key: value for key, _, value in pairs}


def sentinel_conf(service: Mapping[str, Any]) -> list[list[str]]:
    """The lines of the sentinel.conf a sentinel service writes at its first start."""
    script = service["command"][2]
    body = script.split("<<EOF\n", 1)[1].split("\nEOF\n", 1)[0]
    return [line.split() for line in body.splitlines() if line.strip()]


def test_the_documented_options_name_the_declared_profiles() -> None:
    services = compose()["services"]
    declared = {profile for s in services.values() for profile in s.get("profiles", [])}
    documented = set(documented_options()["COMPOSE_PROFILES"].split(","))
    assert documented == declared == {"ledger", "replicas", "sentinel"}
    assert parse_env_file(ENV_EXAMPLE)["COMPOSE_PROFILES"] == "ledger"  # both off by default
    assert set(documented_options()) <= set(parse_env_file(ENV_EXAMPLE)) | {"COMPOSE_PROFILES"}


def test_every_service_of_a_profile_has_a_healthcheck() -> None:
    for name, service in compose()["services"].items():
        if service.get("profiles"):
            assert _healthcheck_enabled(service), name


def test_the_embedded_shell_scripts_parse() -> None:
    """`sh -n` on every `sh -c` script of the file (after interpolation: `$$` is `$`) and on
    postgres/init-replication.sh."""
    scripts = {"postgres/init-replication.sh": (ROOT / "postgres/init-replication.sh").read_text()}
    for name, service in compose()["services"].items():
        for key in ("entrypoint", "command"):
            value = service.get(key)
            if isinstance(value, list) and value[:2] == ["sh", "-c"]:
                scripts[f"{name} {key}"] = value[2]
    assert len(scripts) >= 6
    for where, script in scripts.items():
        result = subprocess.run(["sh", "-n"], input=script, capture_output=True, text=True)
        assert result.returncode == 0, (where, result.stderr)


def test_without_the_options_the_relays_use_one_postgres_and_one_redis() -> None:
    settings = relay_settings(example_env())
    assert settings.database.replica_urls == []
    assert settings.redis.sentinels == []


INIT_MOUNT = "./postgres/init-replication.sh:/docker-entrypoint-initdb.d/10-replication.sh:ro"


def replica_errors(services: Mapping[str, Any]) -> list[str]:
    """What keeps `postgres-replica` from copying and following the `postgres` service."""
    errors: list[str] = []
    primary, replica = services["postgres"], services["postgres-replica"]
    info = parse_conninfo(replica["environment"]["PRIMARY_CONNINFO"])
    host = services.get(info.get("host", ""))
    if host is not primary:
        errors.append(f"primary_conninfo host {info.get('host')} is not the postgres service")
    if info.get("port") != "5432":  # the primary sets no port: PostgreSQL's default
        errors.append(f"primary_conninfo port {info.get('port')} is not the primary's 5432")
    if not _networks(replica) & _networks(primary):
        errors.append("the replica shares no network with the primary")
    if info.get("user") != primary["environment"].get("POSTGRES_REPLICATION_USER"):
        errors.append(f"primary_conninfo user {info.get('user')} is not the replication role")
    if replica["environment"].get("REPLICATION_PASSWORD") != primary["environment"].get(
        "POSTGRES_REPLICATION_PASSWORD"
    ):
        errors.append("the replica's password is not the replication role's")
    if INIT_MOUNT not in primary.get("volumes", []):
        errors.append("the primary does not run postgres/init-replication.sh at initdb")
    conf = parse_conf(CONF.read_text())
    if (
        conf.get("wal_level") not in {"replica", "logical"}
        or int(conf.get("max_wal_senders", "0")) < 2
    ):  # the replica, plus a pg_basebackup at a time
        errors.append("postgres/relay.conf does not let the primary stream to replicas")
    if conf.get("hot_standby") != "on":
        errors.append("postgres/relay.conf does not let a replica serve reads")
    args = parse_args(replica["command"])
    errors += target_errors("postgres-replica", args, conf, mounted=True)
    if "./postgres/relay.conf:/etc/postgresql/relay.conf:ro" not in replica.get("volumes", []):
        errors.append("the replica does not mount postgres/relay.conf")
    if int(args.get("max_connections", "0")) < int(
        parse_args(primary["command"])["max_connections"]
    ):
        errors.append("a hot standby needs max_connections at least the primary's")
    entrypoint = replica.get("entrypoint", [])
    script = entrypoint[2] if entrypoint[:2] == ["sh", "-c"] else ""
    for step in (
        'pg_basebackup --dbname="$conninfo"',
        "standby.signal",
        'exec postgres "$@" -c "primary_conninfo=$conninfo"',
    ):
        if step not in script:
            errors.append(f"the replica's entrypoint lacks {step}")
    return errors


def test_the_replica_follows_the_primary_service() -> None:
    services = compose()["services"]
    primary, replica = services["postgres"], services["postgres-replica"]
    assert replica["profiles"] == ["replicas"] and replica["image"] == primary["image"]
    assert replica_errors(services) == []
    assert primary["environment"]["POSTGRES_REPLICATION_USER"] == "replicator"
    assert replica["environment"]["REPLICATION_PASSWORD"] == TEST_SECRET
    script = (ROOT / "postgres/init-replication.sh").read_text()
    assert "WITH REPLICATION LOGIN PASSWORD" in script
    assert "host replication ${POSTGRES_REPLICATION_USER:-replicator} all scram-sha-256" in script
    assert "pgreplica:/var/lib/postgresql/data" in replica["volumes"]
    assert replica["environment"]["PGDATA"].startswith("/var/lib/postgresql/data/")


def test_the_replica_check_catches_a_replica_that_cannot_follow() -> None:
    services = compose()["services"]
    replica, primary = services["postgres-replica"], services["postgres"]
    replica["environment"]["PRIMARY_CONNINFO"] = "host=postgres-primary port=5433 user=relay"
    replica["environment"]["REPLICATION_PASSWORD"] = "other"
    replica["command"] = ["-c", "config_file=/etc/postgresql/relay.conf", "-c", "wal_level=minimal"]
    primary["volumes"].remove(INIT_MOUNT)
    replica["entrypoint"][2] = replica["entrypoint"][2].replace("standby.signal", "recovery.conf")
    errors = "\n".join(replica_errors(services))
    for expected in (
        "primary_conninfo host postgres-primary is not the postgres service",
        "primary_conninfo port 5433 is not the primary's 5432",
        "primary_conninfo user relay is not the replication role",
        "the replica's password is not the replication role's",
        "the primary does not run postgres/init-replication.sh at initdb",
        "postgres-replica: wal_level belongs in postgres/relay.conf, not -c",
        "a hot standby needs max_connections at least the primary's",
        "the replica's entrypoint lacks standby.signal",
    ):
        assert expected in errors, (expected, errors)


def test_the_documented_replica_url_reaches_the_replica() -> None:
    env = env_with_options()
    services = compose(env)["services"]
    settings = relay_settings(env)
    (url,) = settings.database.replica_urls
    parts = urlsplit(url)
    primary = urlsplit(settings.database.url)
    assert (
        parts.hostname == "postgres-replica" and "replicas" in services[parts.hostname]["profiles"]
    )
    assert parts.port == 5432 and parts.path == primary.path == "/relay"
    assert parts.username == primary.username and parts.password is None  # no secret in .env
    assert services["relay"]["environment"]["PGPASSWORD"] == primary.password
    assert _networks(services["relay"]) & _networks(services["postgres-replica"])


def test_the_documented_sentinels_watch_the_redis_the_relays_use() -> None:
    env = env_with_options()
    services = compose(env)["services"]
    settings = relay_settings(env)
    sentinels = [s for s in services if s.startswith("sentinel-")]
    assert len(sentinels) == 3
    assert settings.redis.sentinels == [f"{name}:26379" for name in sentinels]
    redis_password = urlsplit(settings.redis.url).password
    for name in sentinels:
        service = services[name]
        assert service["profiles"] == ["sentinel"] and service["hostname"] == name
        assert _networks(service) & _networks(services["relay"])
        conf = sentinel_conf(service)
        assert ["port", "26379"] in conf
        (monitor,) = [line for line in conf if line[:2] == ["sentinel", "monitor"]]
        _, _, master_name, host, port, quorum = monitor
        assert master_name == settings.redis.sentinel_service
        assert host == urlsplit(settings.redis.url).hostname == "redis" and port == "6379"
        assert len(sentinels) // 2 < int(quorum) <= len(sentinels)
        assert ["sentinel", "auth-pass", master_name, "$REDIS_PASSWORD"] in conf
        assert ["requirepass", "$REDIS_PASSWORD"] in conf
        assert service["environment"]["REDIS_PASSWORD"] == redis_password
        assert conf.index(["sentinel", "resolve-hostnames", "yes"]) < conf.index(monitor)
        assert _volume_source(service["volumes"][0])[0] == "volume"  # state survives restarts
    assert settings.redis.sentinel_password == redis_password
    # both Redis servers announce a name the relays can resolve, authenticate to each other
    # once one replicates the other, and follow the master the sentinels name when they start
    for name in ("redis", "redis-replica"):
        script = " ".join(services[name]["command"])
        assert f"--replica-announce-ip {name}" in script, name
        assert '--masterauth "$REDIS_PASSWORD"' in script, name
        assert "sentinel get-master-addr-by-name relay" in script, name
        assert f'if [ "$master" = {name} ]; then role=""; fi' in script, name
        assert _networks(services[name]) & _networks(services["relay"])


def test_connections_fit_with_a_replica() -> None:
    """Each worker keeps its query pool on the replica too, and one more connection to each
    server for the lag checks (docs/SCALING.md)."""
    env = env_with_options()
    services = compose(env)["services"]
    settings = relay_settings(env)
    relays = services["relay"]["deploy"]["replicas"]
    workers = relays * settings.network.workers
    replica = parse_args(services["postgres-replica"]["command"])
    assert int(replica["max_connections"]) > workers * (settings.database.pool_max + 1) + 10
    primary = parse_args(services["postgres"]["command"])
    needed = workers * (settings.database.pool_max + 1) + 8 + 10
    assert int(primary["max_connections"]) > needed
