"""The alert rules and the Grafana dashboard: valid PromQL over metrics clickhook defines,
aggregated the way each metric needs, shipped as they are in the repository. (That a running
service exports them is tests/e2e/test_observability.py.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import promql_parser
import pytest
import yaml

from tests.deploy.manifests import Rendered
from tests.deploy.test_consistency import exported_metric_names
from tests.support.initial_metrics import SERVICES, initial_samples
from tests.support.promql import (
    DASHBOARD_PATH,
    RULES_FILE_PATH,
    RULES_PATH,
    Query,
    alert_queries,
    alert_rules,
    clickhook_metric_names,
    dashboard_queries,
    load_dashboard,
    panels,
    parse,
)
from tests.support.services import ROOT

ALERTS = alert_queries()
DASHBOARD_QUERIES = dashboard_queries()
# Reported by every replica for the whole group or table: summing them counts each replica.
WHOLE_GROUP_GAUGES = {
    "clickhook_kafka_consumer_lag",
    "clickhook_retry_envelopes",
    "clickhook_endpoints",
}
# What the dashboard is for (issue 6): throughput, success rate, latency, lag, tiers, DLQ.
DASHBOARD_MUST_SHOW = {
    "clickhook_ingest_events_total",
    "clickhook_delivery_attempts_total",
    "clickhook_delivery_latency_seconds_bucket",
    "clickhook_kafka_consumer_lag",
    "clickhook_retry_envelopes",
    "clickhook_dead_letters_total",
}


def by_where(queries: list[Query]) -> list[object]:
    return [pytest.param(q, id=q.where) for q in queries]


@pytest.mark.parametrize("query", by_where(ALERTS + DASHBOARD_QUERIES))
def test_every_query_is_valid_promql(query: Query) -> None:
    try:
        parse(query.expr)
    except ValueError as exc:
        pytest.fail(f"{query.where}: {exc}\n{query.expr}")


def test_queries_read_only_metrics_clickhook_defines() -> None:
    used = clickhook_metric_names(ALERTS + DASHBOARD_QUERIES)
    defined = exported_metric_names()
    unknown = {name: sorted(where) for name, where in used.items() if name not in defined}
    assert not unknown, f"metrics not in shared/ops/metrics.py: {unknown}"
    missing = DASHBOARD_MUST_SHOW - set(clickhook_metric_names(DASHBOARD_QUERIES))
    assert not missing, f"the dashboard does not show {sorted(missing)}"


# Measured, not zeroed: a lag of 0 before the first measurement would be a claim, not a count.
# The services' first lag sample comes at start (tests/e2e/test_prometheus.py sees them).
MEASURED = {"clickhook_kafka_consumer_lag", "clickhook_retry_envelopes", "clickhook_endpoints"}
# Added by the scraper (Kubernetes), never by the services.
SCRAPE_LABELS = {"namespace", "job", "pod", "instance"}


def label_matchers(queries: list[Query]) -> set[tuple[str, str, str, str]]:
    """(metric, label, op, value) of every label matcher on clickhook's own metrics."""
    found: set[tuple[str, str, str, str]] = set()
    for query in queries:

        def visit(node: promql_parser.Expr) -> None:
            if isinstance(node, promql_parser.VectorSelector) and (node.name or "").startswith(
                "clickhook_"
            ):
                for m in node.matchers.matchers:
                    found.add((str(node.name), m.name, str(m.op).rsplit(".", 1)[-1], m.value))

        promql_parser.walk(parse(query.expr), visit)
    return found


def test_every_label_value_queried_is_one_a_service_exports_from_start() -> None:
    """outcome="success", result="accepted", ...: a value no service writes from its start
    would leave the alert or panel blind until (and after) that value's first event."""
    exported: dict[tuple[str, str], set[str]] = {}
    for service in SERVICES:
        for name, labels, _ in initial_samples(service):
            for label, value in labels.items():
                exported.setdefault((name.removesuffix("_bucket"), label), set()).add(value)
    for name, label, op, value in label_matchers(ALERTS + DASHBOARD_QUERIES):
        if label in SCRAPE_LABELS or name in MEASURED:
            continue
        values = exported.get((name.removesuffix("_bucket"), label), set())
        matches = value in values if op == "Equal" else any(re.fullmatch(value, v) for v in values)
        assert matches, f"{name}{{{label} {op} {value!r}}}: exported {sorted(values)}"


def test_every_metric_queried_is_exported_from_start_by_some_service() -> None:
    exported = {name for service in SERVICES for name, _, _ in initial_samples(service)}
    used = clickhook_metric_names(ALERTS + DASHBOARD_QUERIES)
    missing = {name: sorted(where) for name, where in used.items() if name not in exported}
    assert set(missing) <= MEASURED, f"no series until the first event: {missing}"


def is_whole_group_gauge(node: promql_parser.Expr) -> bool:
    return isinstance(node, promql_parser.VectorSelector) and node.name in WHOLE_GROUP_GAUGES


@pytest.mark.parametrize("query", by_where(ALERTS + DASHBOARD_QUERIES))
def test_whole_group_gauges_are_aggregated_with_max(query: Query) -> None:
    enclosing: list[str] = []
    misread: list[str] = []

    def enter(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.AggregateExpr):
            enclosing.append(str(node.op))
        elif is_whole_group_gauge(node) and enclosing[-1:] != ["max"]:
            misread.append(f"{node} under {enclosing[-1:] or 'no aggregation'}")

    def leave(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.AggregateExpr):
            enclosing.pop()

    promql_parser.walk(parse(query.expr), enter, leave)
    assert not misread, f"{query.where}: {misread}"


def test_alert_rules_are_complete() -> None:
    for alert in alert_rules():
        name = alert["alert"]
        assert re.fullmatch(r"\d+[smh]", alert["for"]), name
        assert alert["labels"]["severity"] in ("critical", "warning"), name
        for key in ("summary", "description", "runbook_url"):
            text = alert["annotations"][key]
            assert text.count("{{") == text.count("}}"), f"{name}: template braces in {key}"


def test_the_rules_file_holds_the_prometheusrules_alerts_exactly() -> None:
    """deploy/monitoring/clickhook-rules.yaml (plain Prometheus) is generated from the
    PrometheusRule: the same groups, alerts, expressions, labels and annotations."""
    rule = yaml.safe_load(RULES_PATH.read_text())
    rules_file = yaml.safe_load(RULES_FILE_PATH.read_text())

    assert rules_file == {"groups": rule["spec"]["groups"]}, (
        "regenerate: .venv/bin/python deploy/tools/prometheus_rules.py"
    )
    generated = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "tools" / "prometheus_rules.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert generated.returncode == 0, generated.stdout


def test_the_rules_file_has_only_what_a_prometheus_rules_file_may_hold() -> None:
    """Prometheus refuses a rules file with unknown keys; these are the ones of its format."""
    rules_file = yaml.safe_load(RULES_FILE_PATH.read_text())

    assert set(rules_file) == {"groups"}
    for group in rules_file["groups"]:
        assert set(group) <= {"name", "interval", "limit", "rules"}
        for alert in group["rules"]:
            assert set(alert) <= {
                "alert",
                "expr",
                "for",
                "keep_firing_for",
                "labels",
                "annotations",
            }
            assert {"alert", "expr"} <= set(alert)


def test_dashboard_is_well_formed_and_every_query_follows_the_namespace() -> None:
    dashboard = load_dashboard()
    every = panels(dashboard)
    ids = [panel["id"] for panel in every]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "namespace"}
    for panel in every:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert 'namespace=~"$namespace"' in target["expr"], panel["title"]


def test_dashboard_ships_as_a_configmap_with_the_monitoring_component(rendered: Rendered) -> None:
    configmap = rendered.find("ConfigMap", "clickhook-grafana-dashboard")
    if rendered.overlay == "dev":
        assert configmap is None, "dev has no monitoring component"
        return
    assert configmap is not None
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(configmap["data"][DASHBOARD_PATH.name])
    assert shipped == load_dashboard()


def test_the_rules_file_takes_the_operators_docs_address_for_every_runbook(
    tmp_path: Path,
) -> None:
    """runbook_url is absolute: the placeholder docs site by default, the operator's when given."""
    output = tmp_path / "rules.yaml"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "deploy" / "tools" / "prometheus_rules.py"),
            "--docs-url",
            "https://docs.example.net/clickhook",
            "--output",
            str(output),
        ],
        check=True,
    )
    ours = [rule["annotations"]["runbook_url"] for rule in alert_rules()]
    theirs = [
        rule["annotations"]["runbook_url"]
        for group in yaml.safe_load(output.read_text())["groups"]
        for rule in group["rules"]
    ]

    assert all(url.startswith("https://clickhook.example/docs/operations/alerts/#") for url in ours)
    assert theirs == [
        url.replace("https://clickhook.example/docs/", "https://docs.example.net/clickhook/")
        for url in ours
    ]
