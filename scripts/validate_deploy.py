"""Offline checks of the deployment pack (deploy/), run by scripts/validate-manifests.

Every Kubernetes manifest under deploy/kubernetes is validated strictly: built-in kinds against the
Kubernetes schemas of kubernetes-validate (oldest and newest supported version), custom resources
(ServiceMonitor, PrometheusRule, ScaledObject) against the schemas of scripts/schemas/. The Prometheus
rules file, the prometheus-adapter rules and the Grafana dashboard have schemas there too. Every
PromQL expression of the pack is then parsed, and the pieces that must agree are compared (selectors
against labels, ports against names, the PrometheusRule against the rules file).

``pack_queries()`` is also what tests/integration/test_deploy_pack.py checks against a real server.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import promql_parser
import yaml
from kubernetes_validate import utils as kubernetes

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES_DIR = ROOT / "deploy" / "kubernetes"
RULES_FILE = ROOT / "deploy" / "observability" / "alerts.rules.yaml"
DASHBOARD_FILE = ROOT / "deploy" / "observability" / "grafana-dashboard.json"
ADAPTER_RULES_FILE = KUBERNETES_DIR / "autoscaling" / "prometheus-adapter" / "prometheus-adapter-rules.yaml"
SCHEMA_FILE = ROOT / "scripts" / "schemas" / "deploy-pack.yaml"
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
}
# What Grafana (`$name`, `${name}`) and prometheus-adapter (`<<.Name>>`) put in place of their template
# variables before a query runs; any other variable is an error.
TEMPLATE_VALUES = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "job": ".+",
    "LabelMatchers": 'namespace="dify",pod="dify-sandbox-0"',
    "GroupBy": "pod",
}
_TEMPLATE_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)|<<\.(\w+)>>")
# Labels that Prometheus (and its Kubernetes discovery) attach to every series of a target.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "container", "endpoint"})
_LABEL_VALUES = re.compile(r"^label_values\((?P<metric>[a-zA-Z_:][a-zA-Z0-9_:]*),\s*(?P<label>[a-zA-Z_]\w*)\)$")


@dataclass(frozen=True, slots=True)
class Selector:
    """One series selector of a query: the metric name, the label names it matches on, and the
    label values it asks for exactly (``label="value"``)."""

    metric: str
    labels: frozenset[str]
    equals: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Query:
    """One PromQL expression of the pack, with where it comes from."""

    source: str
    expr: str
    selectors: tuple[Selector, ...]
    grouping: frozenset[str]


class PackError(Exception):
    """A file of the pack is invalid; the message says which and why."""


def _yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def _schema(name: str) -> dict[str, Any]:
    root = yaml.safe_load(SCHEMA_FILE.read_text(encoding="utf-8"))
    return {**root, "$ref": f"#/$defs/{name}"}


def schema_errors(name: str, data: Any, where: str) -> list[str]:
    """Every way ``data`` breaks the schema ``name`` of scripts/schemas/deploy-pack.yaml."""
    validator = jsonschema.Draft202012Validator(_schema(name))
    messages = []
    for error in validator.iter_errors(data):
        # For oneOf/anyOf, the closest alternative's error says more than "is not valid under any".
        cause = jsonschema.exceptions.best_match(error.context) if error.context else error
        assert cause is not None
        messages.append(f"{where}: {'/'.join(map(str, cause.absolute_path)) or '(top)'}: {cause.message}")
    return sorted(messages)


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes object under deploy/kubernetes (the adapter's config file is not one)."""
    for path in sorted(KUBERNETES_DIR.rglob("*.yaml")):
        if path != ADAPTER_RULES_FILE:
            for doc in _yaml_documents(path):
                yield path, doc


def manifest_errors(path: Path, doc: dict[str, Any]) -> list[str]:
    """Schema errors of one manifest: a custom resource against ours, the rest against Kubernetes'."""
    where = str(path.relative_to(ROOT))
    kind = (doc.get("apiVersion"), doc.get("kind"))
    if kind in CUSTOM_KINDS:
        errors = schema_errors(str(kind[1]), doc, where)
        behavior = doc.get("spec", {}).get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
        if kind[1] == "ScaledObject" and behavior is not None:
            errors += manifest_errors(path, _hpa_with_behavior(behavior))
        return errors
    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes.validate(doc, version, strict=True)
        except (kubernetes.ValidationError, kubernetes.SchemaNotFoundError, kubernetes.InvalidSchemaError) as exc:
            errors.append(f"{where}: Kubernetes {version}: {exc}")
    return errors


def _hpa_with_behavior(behavior: Any) -> dict[str, Any]:
    """A minimal HPA around a ScaledObject's behavior, so Kubernetes' own schema checks it."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "behavior"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 1, "behavior": behavior},
    }


def parse_query(source: str, text: str) -> Query:
    """Parses one expression after putting example values in place of template variables."""

    def substitute(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in TEMPLATE_VALUES:
            raise PackError(f"{source}: unknown template variable {match[0]!r} in {text!r}")
        return TEMPLATE_VALUES[name]

    expr = _TEMPLATE_VARIABLE.sub(substitute, text)
    try:
        ast = promql_parser.parse(expr)
    except ValueError as exc:
        raise PackError(f"{source}: PromQL does not parse ({exc}): {text!r}") from exc
    selectors: list[Selector] = []
    grouping: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = node.matchers.matchers
            name = node.name or next((m.value for m in matchers if m.name == "__name__"), "")
            labels = [matcher for matcher in matchers if matcher.name != "__name__"]
            equals = tuple((m.name, m.value) for m in labels if m.op == promql_parser.MatchOp.Equal)
            selectors.append(Selector(name, frozenset(m.name for m in labels), equals))
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            grouping.update(node.modifier.labels)

    promql_parser.walk(ast, visit)
    return Query(source, expr, tuple(selectors), frozenset(grouping))


def pack_queries() -> list[Query]:
    """Every PromQL expression of the pack: dashboard, alert rules, KEDA and prometheus-adapter."""
    queries = []
    dashboard = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            queries.append(parse_query(f"dashboard panel {panel['title']!r} {target['refId']}", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            text = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = _LABEL_VALUES.match(text)
            if match is None:
                raise PackError(f"dashboard variable {variable['name']}: expected label_values(metric, label)")
            queries.append(parse_query(f"dashboard variable {variable['name']}", match["metric"]))
    for group in yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))["groups"]:
        for rule in group["rules"]:
            queries.append(parse_query(f"{RULES_FILE.name} {rule.get('alert') or rule['record']}", rule["expr"]))
    for path, doc in manifests():
        if doc.get("kind") == "ScaledObject":
            for trigger in doc["spec"]["triggers"]:
                if trigger["type"] == "prometheus":
                    queries.append(parse_query(f"{path.name} trigger", trigger["metadata"]["query"]))
    for rule in yaml.safe_load(ADAPTER_RULES_FILE.read_text(encoding="utf-8"))["rules"]:
        queries.append(parse_query(f"{ADAPTER_RULES_FILE.name} seriesQuery", rule["seriesQuery"]))
        queries.append(parse_query(f"{ADAPTER_RULES_FILE.name} metricsQuery", rule["metricsQuery"]))
    return queries


def query_errors(queries: list[Query]) -> list[str]:
    """Queries that select nothing, or something that is not this service's (the test checks the rest)."""
    errors = []
    for query in queries:
        if not query.selectors:
            errors.append(f"{query.source}: selects no series")
        errors += [
            f"{query.source}: {selector.metric!r} is not a metric of this service"
            for selector in query.selectors
            if not selector.metric.startswith("dify_sandbox_")
        ]
    return errors


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) selects an object with ``labels``."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value, operator = labels.get(expression["key"]), expression["operator"]
        if (operator == "In" and value not in expression["values"]) or (operator == "Exists" and value is None):
            return False
    return True


def consistency_errors(objects: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Cross-file checks: what selects the pods selects them, names and ports agree, rules match."""
    errors = []
    deployment, service = objects["Deployment"][0], objects["Service"][0]
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    container = pod["spec"]["containers"][0]
    container_ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        spec = objects[kind][0]["spec"]
        selector = spec.get("selector") or spec.get("podSelector")
        if kind == "Service":
            selector = {"matchLabels": selector}
        if not _matches(selector, pod_labels):
            errors.append(f"{kind}: its selector does not select the Deployment's pods")
    service_ports = {port["name"] for port in service["spec"]["ports"]}
    monitor = objects["ServiceMonitor"][0]["spec"]
    if not _matches(monitor["selector"], service["metadata"]["labels"]):
        errors.append("ServiceMonitor: its selector does not select the Service")
    errors += [
        f"ServiceMonitor: port {endpoint['port']!r} is not a port name of the Service"
        for endpoint in monitor["endpoints"]
        if endpoint.get("port") not in service_ports
    ]
    annotations = pod["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/port") != str(container_ports["http"]):
        errors.append("Deployment: the prometheus.io/port annotation is not the http container port")
    env = {item["name"]: item for item in container["env"]}
    field = env["SANDBOX_WORKERS"].get("valueFrom", {}).get("resourceFieldRef", {})
    if field.get("resource") != "limits.cpu" or field.get("containerName") != container["name"]:
        errors.append("Deployment: SANDBOX_WORKERS must come from this container's limits.cpu")
    for ingress in objects["NetworkPolicy"][0]["spec"]["ingress"]:
        if {port["port"] for port in ingress["ports"]} != {container_ports["http"]}:
            errors.append("NetworkPolicy: an ingress rule opens another port than the http container port")
    for autoscaler in objects["HorizontalPodAutoscaler"] + objects["ScaledObject"]:
        if autoscaler["spec"]["scaleTargetRef"]["name"] != deployment["metadata"]["name"]:
            errors.append(f"{autoscaler['kind']}: scaleTargetRef is not the Deployment")
    rules_file = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    if objects["PrometheusRule"][0]["spec"]["groups"] != rules_file["groups"]:
        errors.append(f"PrometheusRule: its groups differ from {RULES_FILE.relative_to(ROOT)}")
    return errors


def main() -> int:
    errors: list[str] = []
    objects: dict[str, list[dict[str, Any]]] = {}
    count = 0
    for path, doc in manifests():
        count += 1
        errors += manifest_errors(path, doc)
        objects.setdefault(str(doc.get("kind")), []).append(doc)
    errors += schema_errors("rulesFile", yaml.safe_load(RULES_FILE.read_text(encoding="utf-8")), RULES_FILE.name)
    adapter_rules = yaml.safe_load(ADAPTER_RULES_FILE.read_text(encoding="utf-8"))
    errors += schema_errors("adapterRules", adapter_rules, ADAPTER_RULES_FILE.name)
    dashboard = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    errors += schema_errors("grafanaDashboard", dashboard, DASHBOARD_FILE.name)
    if errors:  # the checks below read fields that the schemas guarantee
        print("\n".join(errors), file=sys.stderr)
        return 1
    try:
        queries = pack_queries()
    except PackError as exc:
        print(exc, file=sys.stderr)
        return 1
    errors += query_errors(queries)
    errors += consistency_errors(objects)
    panel_ids = [panel["id"] for panel in dashboard["panels"]]
    if len(set(panel_ids)) != len(panel_ids):
        errors.append(f"{DASHBOARD_FILE.name}: panel ids are not unique")
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    print(
        f"deploy/kubernetes: {count} objects valid (Kubernetes {' and '.join(KUBERNETES_VERSIONS)}, custom resources"
        f" strict); {len(queries)} PromQL expressions parse; dashboard, rules and adapter rules valid"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
