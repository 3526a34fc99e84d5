"""k8s/gateway.yaml: the Gateway API entry beside the Ingress, checked offline.

kubernetes-validate bundles only the built-in kinds, so the NetworkPolicy is validated against
the Kubernetes schemas and the Gateway and HTTPRoutes against the constraints of the Gateway API
v1 spec for the fields this file uses (unknown fields refused, enums, duration and name
patterns, sessionPersistence rules), then checked against the rest of k8s/: the backend is the
relay Service's port, the route's parents are this Gateway's listeners, the policy selects the
relay pods.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy import K8S_DIR, load_yaml_documents

GATEWAY_FILE = K8S_DIR / "gateway.yaml"
API = "gateway.networking.k8s.io/v1"
DURATION = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")
"""Gateway API's Duration (GEP-2257), as the CRDs validate it."""
SECTION_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

# Allowed keys per object (a subset of the spec: what a relay entry needs), so a misspelt field
# fails here as it would fail `kubectl apply` against the CRDs.
KEYS: dict[str, set[str]] = {
    "gateway.spec": {"gatewayClassName", "listeners", "addresses", "infrastructure"},
    "listener": {"name", "hostname", "port", "protocol", "tls", "allowedRoutes"},
    "tls": {"mode", "certificateRefs", "options"},
    "route.spec": {"parentRefs", "hostnames", "rules"},
    "parentRef": {"group", "kind", "namespace", "name", "sectionName", "port"},
    "rule": {"name", "matches", "filters", "backendRefs", "timeouts", "sessionPersistence"},
    "backendRef": {"group", "kind", "name", "namespace", "port", "weight", "filters"},
    "timeouts": {"request", "backendRequest"},
    "sessionPersistence": {
        "sessionName",
        "type",
        "absoluteTimeout",
        "idleTimeout",
        "cookieConfig",
    },
    "cookieConfig": {"lifetimeType"},
}


def _unknown(where: str, value: Mapping[str, Any], errors: list[str]) -> None:
    extra = set(value) - KEYS[where]
    if extra:
        errors.append(f"{where}: unknown fields {sorted(extra)}")


def _rule_errors(rule: Mapping[str, Any], errors: list[str]) -> None:
    _unknown("rule", rule, errors)
    for ref in rule.get("backendRefs", []):
        _unknown("backendRef", ref, errors)
    timeouts = rule.get("timeouts", {})
    _unknown("timeouts", timeouts, errors)
    for key, value in timeouts.items():
        if not DURATION.match(str(value)):
            errors.append(f"timeouts.{key}: {value!r} is not a Gateway API duration")
    persistence = rule.get("sessionPersistence")
    if persistence is None:
        return
    _unknown("sessionPersistence", persistence, errors)
    if persistence.get("type", "Cookie") not in {"Cookie", "Header"}:
        errors.append(f"sessionPersistence.type: {persistence['type']!r}")
    if len(persistence.get("sessionName", "")) > 128:
        errors.append("sessionPersistence.sessionName: longer than 128 bytes")
    for key in ("absoluteTimeout", "idleTimeout"):
        if key in persistence and not DURATION.match(str(persistence[key])):
            errors.append(f"sessionPersistence.{key}: {persistence[key]!r} is not a duration")
    cookie = persistence.get("cookieConfig", {})
    _unknown("cookieConfig", cookie, errors)
    lifetime = cookie.get("lifetimeType", "Session")
    if lifetime not in {"Permanent", "Session"}:
        errors.append(f"cookieConfig.lifetimeType: {lifetime!r}")
    if lifetime == "Permanent" and "absoluteTimeout" not in persistence:
        errors.append("sessionPersistence: a Permanent cookie needs absoluteTimeout")


def spec_errors(docs: list[dict[str, Any]]) -> list[str]:
    """Field constraints of the Gateway API v1 CRDs for Gateway and HTTPRoute."""
    errors: list[str] = []
    for doc in docs:
        if doc.get("apiVersion") != API:
            continue
        spec = doc["spec"]
        if doc["kind"] == "Gateway":
            _unknown("gateway.spec", spec, errors)
            names = [listener["name"] for listener in spec["listeners"]]
            if len(set(names)) != len(names):
                errors.append("Gateway: listener names repeat")
            for listener in spec["listeners"]:
                _unknown("listener", listener, errors)
                if not SECTION_NAME.match(listener["name"]):
                    errors.append(f"listener {listener['name']!r}: not a section name")
                if listener["protocol"] not in {"HTTP", "HTTPS", "TLS", "TCP", "UDP"}:
                    errors.append(f"listener {listener['name']}: protocol {listener['protocol']}")
                if not 1 <= int(listener["port"]) <= 65535:
                    errors.append(f"listener {listener['name']}: port {listener['port']}")
                if listener["protocol"] == "HTTPS":
                    tls = listener.get("tls", {})
                    _unknown("tls", tls, errors)
                    if tls.get("mode", "Terminate") == "Terminate" and not tls.get(
                        "certificateRefs"
                    ):
                        errors.append(f"listener {listener['name']}: HTTPS without a certificate")
                if "hostname" in listener and not HOSTNAME.match(listener["hostname"]):
                    errors.append(f"listener {listener['name']}: hostname {listener['hostname']}")
        elif doc["kind"] == "HTTPRoute":
            _unknown("route.spec", spec, errors)
            for ref in spec.get("parentRefs", []):
                _unknown("parentRef", ref, errors)
            for rule in spec.get("rules", []):
                _rule_errors(rule, errors)
        else:
            errors.append(f"{doc['kind']}: not a kind this file should hold")
    return errors


def reference_errors(docs: list[dict[str, Any]], services: list[dict[str, Any]]) -> list[str]:
    """Routes attach to this Gateway's listeners and reach the relay Service's real port."""
    errors: list[str] = []
    gateways = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Gateway"}
    ports = {
        (s["metadata"]["name"], p["port"])
        for s in services
        if s["kind"] == "Service"
        for p in s["spec"]["ports"]
    }
    for route in (d for d in docs if d["kind"] == "HTTPRoute"):
        name = route["metadata"]["name"]
        for ref in route["spec"]["parentRefs"]:
            gateway = gateways.get(ref["name"])
            if gateway is None:
                errors.append(f"{name}: parent {ref['name']} is not in the file")
                continue
            listeners = {item["name"]: item for item in gateway["spec"]["listeners"]}
            listener = listeners.get(ref.get("sectionName", ""))
            if listener is None:
                errors.append(f"{name}: no listener {ref.get('sectionName')}")
            elif "hostname" in listener and listener["hostname"] not in route["spec"]["hostnames"]:
                errors.append(f"{name}: hostnames miss {listener['hostname']}")
        for rule in route["spec"]["rules"]:
            for backend in rule.get("backendRefs", []):
                if (backend["name"], backend["port"]) not in ports:
                    errors.append(f"{name}: backend {backend['name']}:{backend['port']} unknown")
    return errors


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return load_yaml_documents(GATEWAY_FILE.read_text())


@pytest.fixture(scope="module")
def services() -> list[dict[str, Any]]:
    return load_yaml_documents((K8S_DIR / "base" / "relay-service.yaml").read_text())


def test_the_gateway_and_routes_follow_the_spec(docs: list[dict[str, Any]]) -> None:
    assert spec_errors(docs) == []
    assert {d["kind"] for d in docs} == {"Gateway", "HTTPRoute", "NetworkPolicy"}


def test_the_route_reaches_the_relays_and_is_sticky(
    docs: list[dict[str, Any]], services: list[dict[str, Any]]
) -> None:
    assert reference_errors(docs, services) == []
    route = next(d for d in docs if d["kind"] == "HTTPRoute" and d["metadata"]["name"] == "relay")
    rule = route["spec"]["rules"][0]
    assert rule["sessionPersistence"]["type"] == "Cookie"
    assert rule["timeouts"]["request"] == "0s"  # no cap on a WebSocket's lifetime


@pytest.mark.parametrize("version", ["1.29", kubernetes_validate.utils.latest_version()])
def test_the_network_policy_validates_and_selects_the_relays(
    docs: list[dict[str, Any]], version: str
) -> None:
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    kubernetes_validate.validate(policy, version, strict=True)
    assert policy["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "relay-cluster",
        "app.kubernetes.io/component": "relay",
    }
    assert policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8008}]


def test_the_checks_catch_broken_copies(
    docs: list[dict[str, Any]], services: list[dict[str, Any]]
) -> None:
    broken = copy.deepcopy(docs)
    route = next(d for d in broken if d["kind"] == "HTTPRoute" and d["metadata"]["name"] == "relay")
    rule = route["spec"]["rules"][0]
    rule["sessionPersistence"]["absoluteTimout"] = "1h"
    rule["sessionPersistence"]["cookieConfig"]["lifetimeType"] = "Permanent"
    rule["timeouts"]["request"] = "1d"
    rule["backendRefs"][0]["port"] = 80
    route["spec"]["parentRefs"][0]["sectionName"] = "wss"
    assert spec_errors(broken) == [
        "timeouts.request: '1d' is not a Gateway API duration",
        "sessionPersistence: unknown fields ['absoluteTimout']",
        "sessionPersistence: a Permanent cookie needs absoluteTimeout",
    ]
    assert reference_errors(broken, services) == [
        "relay: no listener wss",
        "relay: backend relay:80 unknown",
    ]
