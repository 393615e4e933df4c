"""The PromQL that ops run against clickhook: the alert rules and the Grafana dashboard's
queries, parsed by a real PromQL parser, and the metric names they read."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import promql_parser
import yaml

from tests.support.services import ROOT

RULES_PATH = ROOT / "deploy" / "k8s" / "components" / "monitoring" / "prometheusrule.yaml"
# The same alerts as a plain Prometheus rules file (deploy/tools/prometheus_rules.py).
RULES_FILE_PATH = ROOT / "deploy" / "monitoring" / "clickhook-rules.yaml"
DASHBOARD_PATH = ROOT / "deploy" / "monitoring" / "clickhook-dashboard.json"

# Grafana replaces these before Prometheus sees a query: stand-ins of the same kind.
GRAFANA_STAND_INS = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$namespace": ".*",
}


@dataclass(frozen=True)
class Query:
    where: str  # the alert, or the dashboard panel, it belongs to
    expr: str


def alert_rules() -> list[dict[str, Any]]:
    rule = yaml.safe_load(RULES_PATH.read_text())
    return [alert for group in rule["spec"]["groups"] for alert in group["rules"]]


def rules_file_alerts() -> list[dict[str, Any]]:
    """The alerts of the plain rules file, for Prometheus without the Operator."""
    rules_file = yaml.safe_load(RULES_FILE_PATH.read_text())
    return [alert for group in rules_file["groups"] for alert in group["rules"]]


def alert_queries() -> list[Query]:
    """Every alert expression, of the PrometheusRule and of the plain rules file."""
    return [Query(f"alert {alert['alert']}", alert["expr"]) for alert in alert_rules()] + [
        Query(f"rules file alert {alert['alert']}", alert["expr"]) for alert in rules_file_alerts()
    ]


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD_PATH.read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    found: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panels(panel))
    return found


def dashboard_queries() -> list[Query]:
    dashboard = load_dashboard()
    queries = [
        Query(f"panel {panel['title']!r}", target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            expr = re.fullmatch(r"label_values\((\w+),\s*\w+\)", variable["definition"])
            assert expr is not None, f"variable {variable['name']}: {variable['definition']}"
            queries.append(Query(f"variable {variable['name']}", expr.group(1)))
    return queries


def without_grafana_variables(expr: str) -> str:
    for variable, stand_in in GRAFANA_STAND_INS.items():
        expr = expr.replace(variable, stand_in)
    assert "$" not in expr, f"a Grafana variable with no stand-in: {expr}"
    return expr


def parse(expr: str) -> promql_parser.Expr:
    """Raises ValueError with the parser's message when ``expr`` is not valid PromQL."""
    parsed: promql_parser.Expr = promql_parser.parse(without_grafana_variables(expr))
    return parsed


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(parse(expr), visit)
    return names


def clickhook_metric_names(queries: list[Query]) -> dict[str, set[str]]:
    """clickhook's own metric → the alerts and panels that read it."""
    used: dict[str, set[str]] = {}
    for query in queries:
        for name in metric_names(query.expr):
            if name.startswith("clickhook_"):
                used.setdefault(name, set()).add(query.where)
    return used


def selectors(queries: list[Query]) -> dict[str, set[str]]:
    """Every series selector of the queries, as PromQL (``name{matchers}``) → where it is read;
    what Prometheus must hold for the query to see anything."""
    found: dict[str, set[str]] = {}
    for query in queries:

        def visit(node: promql_parser.Expr, where: str = query.where) -> None:
            if isinstance(node, promql_parser.VectorSelector):
                found.setdefault(str(node), set()).add(where)

        promql_parser.walk(parse(query.expr), visit)
    return found
