"""Observability artefacts: the Grafana dashboard (grafana/), the Prometheus alert rules, their
unit tests and the scrape config (prometheus/), and the Prometheus Operator monitors with the
metrics NetworkPolicy (k8s/monitoring/).

- Every PromQL expression (dashboard targets and variables, alert rules) names only metrics that
  cluster/metrics.py exports (plus Prometheus' `up` and, for the disk alerts, node_exporter's
  filesystem series), and every exported metric is on the dashboard.
- `promtool check rules`, `promtool check config` and `promtool test rules` run for real.
  promtool comes from Debian's `prometheus` package (scripts/install-system-deps.sh, run by
  `make test`); without it these tests fail, they do not skip.
- k8s/monitoring: both components render into both overlays; the core objects validate strictly
  against the Kubernetes schemas, and the PodMonitor/ServiceMonitor against the subset of the
  monitoring.coreos.com/v1 CRD schema written below (the CRD schemas are not bundled offline:
  their allowed keys, required fields and patterns were copied from prometheus-operator's
  example/prometheus-operator-crd), plus cross-checks: selectors, ports, job label, and the
  NetworkPolicy admitting only Prometheus to the metrics port.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import jsonschema
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client.metrics import MetricWrapperBase

from cluster import metrics
from cluster.config import load_settings
from cluster.relay import http
from cluster.relay.keys import CONTEXT_KEY
from tests.deploy import (
    COMPOSE_FILE,
    K8S_DIR,
    ROOT,
    load_yaml,
    load_yaml_documents,
    parse_env_file,
    with_test_secrets,
)
from tests.deploy.test_kubernetes import (
    OLDEST_SUPPORTED,
    OVERLAYS,
    container_ports,
    find,
    manifest_errors,
    matches,
    relay_environment,
    render,
    schema_errors,
    selected,
)

DASHBOARD = ROOT / "grafana" / "relay-cluster.json"
PROMETHEUS_DIR = ROOT / "prometheus"
ALERTS = PROMETHEUS_DIR / "relay-alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "relay-alerts.test.yml"
SCRAPE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
MONITORING = K8S_DIR / "monitoring"
COMPONENTS = ("podmonitor", "servicemonitor")
JOB = "relay-cluster"

TARGETS = {
    "relay_event_acceptance_seconds": 0.010,
    "relay_payment_verification_seconds": 0.050,
    "relay_delivery_lag_seconds": 0.100,
    "relay_db_query_seconds": 0.005,
}
"""The seed's four latency targets (seconds)."""

PROMETHEUS_SERIES = {"up"}
NODE_EXPORTER_SERIES = {
    "node_filesystem_avail_bytes",
    "node_filesystem_size_bytes",
    "node_filesystem_readonly",
}


# --- metric names ------------------------------------------------------------------------------


def exported_series() -> dict[str, str]:
    """Every series name cluster/metrics.py can export, mapped to its metric's base name."""
    names: dict[str, str] = {}
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        for family in value.describe():
            suffixes = {
                "counter": ("_total",),
                "histogram": ("_bucket", "_count", "_sum"),
                "gauge": ("",),
            }[family.type]
            for suffix in suffixes:
                names[family.name + suffix] = family.name
    return names


_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:$])([a-zA-Z_:][\w:]*)(\s*\()?")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def promql_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels, label values,
    durations and Grafana variables removed)."""
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def test_the_promql_name_extraction() -> None:
    assert promql_metrics(
        "histogram_quantile(0.95, sum by (le, instance) (rate(relay_db_query_seconds_bucket"
        '{job=~"$job", operation!="a b"}[$__rate_interval]))) > 0.005 and on (job) up == 1'
    ) == {"relay_db_query_seconds_bucket", "up"}
    assert promql_metrics("sum(rate(relay_ok_totl[5m])) by (prefix) / 1e3") == {"relay_ok_totl"}


def unknown_metrics(exprs: Iterator[str], allowed: set[str]) -> list[str]:
    return sorted({name for expr in exprs for name in promql_metrics(expr)} - allowed)


# --- the Grafana dashboard ---------------------------------------------------------------------


def load_dashboard() -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(DASHBOARD.read_text()))


def all_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def dashboard_exprs(dashboard: Mapping[str, Any]) -> Iterator[str]:
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield re.sub(
                r"^label_values\((.*),\s*\w+\)$",
                r"\1",
                query["query"] if isinstance(query, dict) else query,
            )


def dashboard_errors(dashboard: Mapping[str, Any]) -> list[str]:
    errors: list[str] = []
    if dashboard.get("schemaVersion", 0) < 39:  # Grafana 11
        errors.append(f"schemaVersion {dashboard.get('schemaVersion')} is older than Grafana 11")
    if not dashboard.get("uid") or dashboard.get("id") is not None:
        errors.append("the dashboard needs a fixed uid and a null id (for import)")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    source = variables.get("datasource", {})
    if source.get("type") != "datasource" or source.get("query") != "prometheus":
        errors.append("no Prometheus datasource variable named `datasource`")
    for name in ("job", "instance"):
        if name not in variables:
            errors.append(f"no `{name}` variable")
    ids: set[int] = set()
    cells: dict[tuple[int, int], int] = {}
    for panel in all_panels(dashboard):
        panel_id, title = panel.get("id"), panel.get("title")
        if not isinstance(panel_id, int) or panel_id in ids:
            errors.append(f"panel {title!r}: id {panel_id!r} missing or not unique")
        ids.add(panel_id if isinstance(panel_id, int) else -1)
        grid = panel["gridPos"]
        if grid["x"] < 0 or grid["w"] <= 0 or grid["x"] + grid["w"] > 24 or grid["h"] <= 0:
            errors.append(f"panel {title!r}: gridPos {grid} outside the 24 columns")
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                if (x, y) in cells:
                    errors.append(f"panel {title!r} overlaps panel {cells[(x, y)]}")
                    break
                cells[(x, y)] = panel_id if isinstance(panel_id, int) else -1
            else:
                continue
            break
        if panel["type"] == "row":
            continue
        if not panel.get("targets"):
            errors.append(f"panel {title!r} has no query")
        refs = [target.get("refId") for target in panel.get("targets", [])]
        if len(refs) != len(set(refs)):
            errors.append(f"panel {title!r}: duplicate refId")
        for holder in (panel, *panel.get("targets", [])):
            if holder.get("datasource", {}).get("uid") != "${datasource}":
                errors.append(f"panel {title!r}: datasource is not the $datasource variable")
                break
    allowed = set(exported_series()) | PROMETHEUS_SERIES
    for name in unknown_metrics(dashboard_exprs(dashboard), allowed):
        errors.append(f"unknown metric {name}")
    return errors


def test_the_dashboard_is_valid_and_uses_only_existing_metrics() -> None:
    assert dashboard_errors(load_dashboard()) == []


def test_the_dashboard_shows_every_metric_the_relay_exports() -> None:
    used = {name for expr in dashboard_exprs(load_dashboard()) for name in promql_metrics(expr)}
    series = exported_series()
    assert sorted(set(series.values()) - {series[name] for name in used if name in series}) == []


def test_the_dashboard_check_catches_broken_dashboards() -> None:
    dashboard = load_dashboard()
    panels = [p for p in all_panels(dashboard) if p["type"] != "row"]
    panels[0]["targets"][0]["expr"] = panels[0]["targets"][0]["expr"].replace(
        "relay_event_acceptance_seconds_bucket", "relay_event_accept_seconds_bucket"
    )
    panels[1]["id"] = panels[2]["id"]
    panels[3]["datasource"] = {"type": "prometheus", "uid": "PBFA97CFB590B2093"}
    panels[4]["gridPos"] = dict(panels[5]["gridPos"])
    dashboard["templating"]["list"] = [
        v for v in dashboard["templating"]["list"] if v["name"] != "datasource"
    ]
    errors = "\n".join(dashboard_errors(dashboard))
    for expected in (
        "unknown metric relay_event_accept_seconds_bucket",
        f"id {panels[2]['id']} missing or not unique",
        f"panel {panels[3]['title']!r}: datasource is not the $datasource variable",
        f"panel {panels[5]['title']!r} overlaps panel {panels[4]['id']}",
        "no Prometheus datasource variable",
    ):
        assert expected in errors, (expected, errors)


def _panel_thresholds(panel: Mapping[str, Any]) -> set[float]:
    defaults = panel["fieldConfig"]["defaults"]
    if defaults["custom"]["thresholdsStyle"]["mode"] not in ("line", "dashed", "line+area"):
        return set()
    return {step["value"] for step in defaults["thresholds"]["steps"] if step["value"] is not None}


def test_the_dashboard_plots_the_seed_targets_as_p95_and_p99_with_their_lines() -> None:
    panels = [p for p in all_panels(load_dashboard()) if p["type"] != "row"]
    for metric, limit in TARGETS.items():
        plotted = [
            p
            for p in panels
            if {f"{metric}_bucket"}
            == set().union(*(promql_metrics(t["expr"]) for t in p["targets"]))
            and {"0.95", "0.99"}
            <= {
                q
                for t in p["targets"]
                for q in re.findall(r"histogram_quantile\(([\d.]+)", t["expr"])
            }
        ]
        assert plotted, f"no p95/p99 panel for {metric}"
        for panel in plotted:
            assert _panel_thresholds(panel) == {limit}, panel["title"]
            assert panel["fieldConfig"]["defaults"]["unit"] == "s"


def test_the_dashboard_has_the_operator_panels() -> None:
    exprs = list(dashboard_exprs(load_dashboard()))

    def shown(pattern: str) -> bool:
        return any(re.search(pattern, expr) for expr in exprs)

    assert shown(r"sum by \(prefix\) \(rate\(relay_ok_total")  # accepted/refused per prefix
    assert shown(r'relay_ok_total\{[^}]*prefix!~"accepted\|duplicate"')  # refusals alone
    assert shown(r"sum by \(instance\) \(relay_connections")
    assert shown(r"sum by \(instance\) \(relay_subscriptions")
    assert shown(r"by \(le, instance\) \(rate\(relay_delivery_lag_seconds_bucket")  # fan-out lag
    for metric in (
        "relay_outbox_backlog",
        "relay_outbox_oldest_seconds",
        "relay_outbox_forwarded_total",
        "relay_outbox_dead_letters_total",
        "relay_dassie_breaker_state",
        "relay_dassie_calls_total",
        "relay_dassie_failures_total",
        "relay_dependency_up",
    ):
        assert shown(metric), metric
    assert shown(r"sum by \(level, result\) \(rate\(relay_channel_cache_total")


# --- promtool ----------------------------------------------------------------------------------


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(
            "promtool is not installed: run scripts/install-system-deps.sh (`make system-deps`,"
            " part of `make test`), which installs Debian's `prometheus` package"
        )
    return subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_scrape_config() -> None:
    result = promtool("check", "config", SCRAPE_CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "relay-alerts.yml" in result.stdout + result.stderr  # the rules were loaded with it


def test_the_alert_unit_tests_pass() -> None:
    result = promtool("test", "rules", ALERT_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$job": JOB,
    "$instance": ".*",
}


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """The dashboard's queries, Grafana's variables substituted, as recording rules: promtool
    parses each one as Prometheus would."""
    rules = []
    for number, expr in enumerate(dashboard_exprs(load_dashboard())):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{number}", "expr": expr})
    (tmp_path / "dashboard.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    result = promtool("check", "rules", "dashboard.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_promtool_catches_broken_rules_and_wrong_expectations(tmp_path: Path) -> None:
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    rules = ALERTS.read_text()
    (tmp_path / ALERTS.name).write_text(rules.replace("[5m]", "[5mm]", 1))
    result = promtool("check", "rules", ALERTS.name, cwd=tmp_path)
    assert result.returncode != 0 and "5mm" in result.stdout + result.stderr
    # The acceptance target moved to 20 ms: the unit test expecting instance a to fire fails.
    (tmp_path / ALERTS.name).write_text(rules.replace("> 0.010", "> 0.020", 1))
    result = promtool("test", "rules", ALERT_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "RelayEventAcceptanceSlow" in result.stdout + result.stderr


# --- the alert rules ---------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    document = load_yaml(ALERTS)
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


EXPECTED_ALERTS = {
    "RelayEventAcceptanceSlow",
    "RelayPaymentVerificationSlow",
    "RelayDeliveryLagSlow",
    "RelayDbQuerySlow",
    "RelayFanoutLagHigh",
    "RelayOutboxBacklogGrowing",
    "RelayOutboxTooOld",
    "RelayOutboxDeadLetters",
    "RelayDassieBreakerOpen",
    "RelayPostgresDown",
    "RelayRedisDown",
    "RelayLedgerDown",
    "RelayInstanceDown",
    "RelayNoInstanceScraped",
    "RelayDiskSpaceLow",
    "RelayDiskSpaceCritical",
    "RelayReplicaNotServing",
}


def test_every_alert_has_a_duration_severity_and_text() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == EXPECTED_ALERTS
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_alerts_use_only_existing_metrics() -> None:
    allowed = set(exported_series()) | PROMETHEUS_SERIES | NODE_EXPORTER_SERIES
    assert unknown_metrics((rule["expr"] for rule in alert_rules()), allowed) == []
    disk = [rule for rule in alert_rules() if promql_metrics(rule["expr"]) & NODE_EXPORTER_SERIES]
    assert {rule["alert"] for rule in disk} == {"RelayDiskSpaceLow", "RelayDiskSpaceCritical"}


def test_the_latency_alerts_are_the_seed_targets_as_p95_over_5_minutes() -> None:
    by_metric: dict[str, float] = {}
    for rule in alert_rules():
        expr = " ".join(rule["expr"].split())
        match = re.fullmatch(
            r"histogram_quantile\(0\.95, sum by \(job, instance, le\) "
            r"\(rate\((\w+)_bucket\{[^}]*\}\[5m\]\)\)\) > ([\d.]+)",
            expr,
        )
        if match:
            by_metric[match.group(1)] = float(match.group(2))
    assert by_metric == TARGETS


def test_every_alert_is_unit_tested_firing() -> None:
    fired = {
        case["alertname"]
        for test in load_yaml(ALERT_TESTS)["tests"]
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert fired == EXPECTED_ALERTS


def test_the_scrape_config_reads_only_the_private_metrics_port() -> None:
    config = load_yaml(SCRAPE_CONFIG)
    assert config["rule_files"] == [ALERTS.name]
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == JOB]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    environment = load_yaml(COMPOSE_FILE)["services"]["relay"]["environment"]
    metrics_port = int(environment["RELAY_NETWORK__METRICS_PORT"])
    public_port = int(environment["RELAY_NETWORK__PORT"])
    ports = [sd["port"] for sd in job.get("dns_sd_configs", [])]
    ports += [
        int(target.rsplit(":", 1)[1])
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    assert ports and set(ports) == {metrics_port} and public_port not in ports


# --- /health sets the gauges the dependency and outbox alerts read ------------------------------


class _Store:
    def __init__(self, up: bool) -> None:
        self.up = up
        self.pool = _Pool()

    async def ping(self) -> None:
        if not self.up:
            raise OSError("connection refused")


class _Cursor:
    async def fetchone(self) -> tuple[int, float | None]:
        return (42, 7.5)


class _Connection:
    async def __aenter__(self) -> _Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def execute(self, query: str) -> _Cursor:
        assert "payment_outbox" in query
        return _Cursor()


class _Pool:
    def connection(self) -> _Connection:
        return _Connection()


async def _health(postgres_up: bool, redis_up: bool, payments: bool) -> int:
    context = SimpleNamespace(
        store=_Store(postgres_up),
        bus=SimpleNamespace(connected=redis_up),
        stats=SimpleNamespace(connections=0),
        index=[],
        outbox=object() if payments else None,
    )
    app = web.Application()
    app[CONTEXT_KEY] = cast(Any, context)
    response = await http.health(make_mocked_request("GET", "/health", app=app))
    return response.status


def _gauge(metric: Any) -> float:
    return float(metric._value.get())


async def test_health_sets_the_dependency_and_outbox_gauges() -> None:
    metrics.OUTBOX_BACKLOG.set(0)
    assert await _health(postgres_up=True, redis_up=False, payments=True) == 200
    assert _gauge(metrics.DEPENDENCY_UP.labels("postgres")) == 1
    assert _gauge(metrics.DEPENDENCY_UP.labels("redis")) == 0
    assert (_gauge(metrics.OUTBOX_BACKLOG), _gauge(metrics.OUTBOX_OLDEST)) == (42, 7.5)
    metrics.OUTBOX_BACKLOG.set(0)
    assert await _health(postgres_up=False, redis_up=True, payments=True) == 503
    assert _gauge(metrics.DEPENDENCY_UP.labels("postgres")) == 0
    assert _gauge(metrics.DEPENDENCY_UP.labels("redis")) == 1
    assert _gauge(metrics.OUTBOX_BACKLOG) == 0  # not read while PostgreSQL is down


# --- k8s/monitoring ----------------------------------------------------------------------------

_DURATION = (
    "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"matchLabels": {"type": "object"}, "matchExpressions": {"type": "array"}},
}
_RELABEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        key: {"type": "string"}
        for key in ("action", "regex", "replacement", "separator", "targetLabel")
    }
    | {
        "sourceLabels": {"type": "array", "items": {"type": "string"}},
        "modulus": {"type": "integer"},
    },
}
_ENDPOINT_KEYS = [
    "authorization",
    "basicAuth",
    "bearerTokenSecret",
    "enableHttp2",
    "filterRunning",
    "followRedirects",
    "honorLabels",
    "honorTimestamps",
    "interval",
    "metricRelabelings",
    "noProxy",
    "oauth2",
    "params",
    "path",
    "port",
    "portNumber",
    "proxyConnectHeader",
    "proxyFromEnvironment",
    "proxyUrl",
    "relabelings",
    "scheme",
    "scrapeTimeout",
    "targetPort",
    "tlsConfig",
    "trackTimestampsStaleness",
]
_SPEC_KEYS = [
    "attachMetadata",
    "bodySizeLimit",
    "convertClassicHistogramsToNHCB",
    "fallbackScrapeProtocol",
    "jobLabel",
    "keepDroppedTargets",
    "labelLimit",
    "labelNameLengthLimit",
    "labelValueLengthLimit",
    "namespaceSelector",
    "nativeHistogramBucketLimit",
    "nativeHistogramMinBucketFactor",
    "podTargetLabels",
    "sampleLimit",
    "scrapeClass",
    "scrapeClassicHistograms",
    "scrapeNativeHistograms",
    "scrapeProtocols",
    "selector",
    "selectorMechanism",
    "targetLimit",
]


def _monitor_schema(kind: str) -> dict[str, Any]:
    """monitoring.coreos.com/v1 PodMonitor / ServiceMonitor, the part of the CRD's
    openAPIV3Schema these manifests use, strict: an unknown key is an error, as kubectl's
    server-side field validation would report it."""
    endpoints = "podMetricsEndpoints" if kind == "PodMonitor" else "endpoints"
    endpoint_keys = [*_ENDPOINT_KEYS, *(["bearerTokenFile"] if kind == "ServiceMonitor" else [])]
    spec_keys = [*_SPEC_KEYS, endpoints]
    if kind == "ServiceMonitor":
        spec_keys += ["serviceDiscoveryRole", "targetLabels"]
    endpoint: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {key: {} for key in endpoint_keys}
        | {
            "port": {"type": "string"},
            "path": {"type": "string"},
            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
            "interval": {"type": "string", "pattern": _DURATION},
            "scrapeTimeout": {"type": "string", "pattern": _DURATION},
            "relabelings": {"type": "array", "items": _RELABEL},
            "metricRelabelings": {"type": "array", "items": _RELABEL},
        },
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": {"type": "object", "required": ["name"]},
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["selector", endpoints] if kind == "ServiceMonitor" else ["selector"],
                "properties": {key: {} for key in spec_keys}
                | {
                    "jobLabel": {"type": "string"},
                    "selector": _SELECTOR,
                    endpoints: {"type": "array", "minItems": 1, "items": endpoint},
                },
            },
        },
    }


def monitor_schema_errors(document: Mapping[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(_monitor_schema(document["kind"]))
    name = f"{document['kind']}/{document['metadata'].get('name')}"
    return [
        f"{name}: {'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(document)
    ]


@pytest.fixture(scope="module")
def monitoring_copies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """k8s/ with secrets.env from the examples, once per monitoring component, each overlay
    listing that component, as docs/OPERATIONS.md tells an operator to."""
    copies = {}
    for component in COMPONENTS:
        target = tmp_path_factory.mktemp(component) / "k8s"
        shutil.copytree(K8S_DIR, target, ignore=shutil.ignore_patterns("secrets.env"))
        for overlay in OVERLAYS:
            directory = target / "overlays" / overlay
            values = with_test_secrets(parse_env_file(directory / "secrets.env.example"))
            (directory / "secrets.env").write_text(
                "".join(f"{key}={value}\n" for key, value in values.items())
            )
            kustomization = directory / "kustomization.yaml"
            document = load_yaml(kustomization)
            document.setdefault("components", []).append(f"../../monitoring/{component}")
            kustomization.write_text(yaml.safe_dump(document, sort_keys=False))
        copies[component] = target
    return copies


@pytest.fixture(scope="module")
def monitored(monitoring_copies: dict[str, Path]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    return {
        (component, overlay): render(monitoring_copies[component] / "overlays" / overlay)
        for component in COMPONENTS
        for overlay in OVERLAYS
    }


def _params() -> list[Any]:
    return [
        pytest.param(component, overlay, id=f"{component}-{overlay}")
        for component in COMPONENTS
        for overlay in OVERLAYS
    ]


MONITOR_KINDS = {"PodMonitor", "ServiceMonitor"}


@pytest.mark.parametrize(("component", "overlay"), _params())
def test_the_monitoring_components_render_and_validate(
    monitored: dict[tuple[str, str], list[dict[str, Any]]], component: str, overlay: str
) -> None:
    docs = monitored[(component, overlay)]
    monitors = [d for d in docs if d["kind"] in MONITOR_KINDS]
    assert [d["kind"] for d in monitors] == [
        "PodMonitor" if component == "podmonitor" else "ServiceMonitor"
    ]
    errors = [error for doc in monitors for error in monitor_schema_errors(doc)]
    for version in (OLDEST_SUPPORTED, "1.37"):
        errors += [
            error
            for doc in docs
            if doc["kind"] not in MONITOR_KINDS
            for error in schema_errors(doc, version)
        ]
    core = [d for d in docs if d["kind"] not in MONITOR_KINDS]
    errors += manifest_errors(core, OVERLAYS[overlay])
    assert errors == []
    assert all(d["metadata"].get("namespace") == OVERLAYS[overlay] for d in monitors)


def test_the_monitor_schema_catches_typos(
    monitored: dict[tuple[str, str], list[dict[str, Any]]],
) -> None:
    docs = monitored[("podmonitor", "dev")]
    monitor = copy.deepcopy(next(d for d in docs if d["kind"] == "PodMonitor"))
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    endpoint["intervall"] = endpoint.pop("interval")
    endpoint["scrapeTimeout"] = "5 seconds"
    monitor["spec"]["podMetricEndpoints"] = monitor["spec"].pop("podMetricsEndpoints")
    errors = "\n".join(monitor_schema_errors(monitor))
    assert "'podMetricEndpoints' was unexpected" in errors
    monitor["spec"]["podMetricsEndpoints"] = monitor["spec"].pop("podMetricEndpoints")
    errors = "\n".join(monitor_schema_errors(monitor))
    assert "'intervall' was unexpected" in errors and "'5 seconds' does not match" in errors


def _scraped_ports(docs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], set[Any], str]:
    """(pod templates scraped, container ports scraped, job label value) of the one monitor."""
    (monitor,) = [d for d in docs if d["kind"] in MONITOR_KINDS]
    spec = monitor["spec"]
    if monitor["kind"] == "PodMonitor":
        templates = selected(docs, spec["selector"])
        ports = {endpoint["port"] for endpoint in spec["podMetricsEndpoints"]}
        job = {t["metadata"]["labels"].get(spec["jobLabel"]) for t in templates}
    else:
        services = [
            d
            for d in docs
            if d["kind"] == "Service" and matches(spec["selector"], d["metadata"].get("labels", {}))
        ]
        assert services, "the ServiceMonitor selects no Service"
        templates, ports, job = [], set(), set()
        for service in services:
            templates += selected(docs, service["spec"]["selector"])
            by_name = {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}
            ports |= {by_name[endpoint["port"]] for endpoint in spec["endpoints"]}
            job.add(service["metadata"]["labels"].get(spec["jobLabel"]))
    assert len(job) == 1, job
    return templates, ports, job.pop()


@pytest.mark.parametrize(("component", "overlay"), _params())
def test_the_monitors_scrape_only_the_relays_private_port_as_the_alerts_expect(
    monitored: dict[tuple[str, str], list[dict[str, Any]]], component: str, overlay: str
) -> None:
    docs = monitored[(component, overlay)]
    network = load_settings(env=relay_environment(docs)).network
    templates, ports, job = _scraped_ports(docs)
    relay = find(docs, "Deployment", "relay")["spec"]["template"]
    assert templates == [relay]
    assert job == JOB
    (container,) = relay["spec"]["containers"]
    by_name = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics"} and by_name["metrics"] == network.metrics_port
    assert ports <= container_ports(templates)
    # The public Service and the Ingress still carry the public port only.
    service = find(docs, "Service", "relay")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    if component == "servicemonitor":
        metrics_service = find(docs, "Service", "relay-metrics")["spec"]
        assert metrics_service["clusterIP"] == "None"
        assert not [
            path
            for ingress in docs
            if ingress["kind"] == "Ingress"
            for rule in ingress["spec"]["rules"]
            for path in rule["http"]["paths"]
            if path["backend"]["service"]["name"] == "relay-metrics"
        ]


def _reachable(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], set[Any]]]:
    """(peer, ports) of every ingress rule of a NetworkPolicy selecting the relay pods."""
    labels = find(docs, "Deployment", "relay")["spec"]["template"]["metadata"]["labels"]
    found = []
    for policy in (d for d in docs if d["kind"] == "NetworkPolicy"):
        if not matches(policy["spec"]["podSelector"], labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            ports = {port["port"] for port in rule["ports"]}
            for peer in rule["from"]:
                found.append((peer, ports))
    return found


@pytest.mark.parametrize(("component", "overlay"), _params())
def test_only_prometheus_reaches_the_metrics_port(
    monitored: dict[tuple[str, str], list[dict[str, Any]]], component: str, overlay: str
) -> None:
    docs = monitored[(component, overlay)]
    network = load_settings(env=relay_environment(docs)).network
    reachable = _reachable(docs)
    metrics_peers = [peer for peer, ports in reachable if network.metrics_port in ports]
    assert metrics_peers == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]
    for peer, ports in reachable:
        if peer in metrics_peers:
            assert ports == {network.metrics_port}
        else:  # the public port stays open to the ingress controller
            assert ports == {network.port}
            assert peer["namespaceSelector"]["matchLabels"] == {
                "kubernetes.io/metadata.name": "ingress-nginx"
            }


def test_the_overlays_apply_without_the_monitoring_crds() -> None:
    """The monitors are opt-in components: a cluster without the Prometheus Operator's CRDs
    applies the overlays unchanged (base kustomization lists no monitoring.coreos.com object)."""
    for path in K8S_DIR.rglob("kustomization.yaml"):
        if MONITORING in path.parents:
            continue
        document = load_yaml(path)
        for resource in document.get("resources", []):
            resolved = (path.parent / resource).resolve()
            assert MONITORING not in (resolved, *resolved.parents), path
    for path in (MONITORING).rglob("*.yaml"):
        for document in load_yaml_documents(path.read_text()):
            if document.get("kind") == "Component":
                assert document["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
