"""The alerts as Prometheus itself reads them: ``promtool check rules`` accepts the rules file
and ``promtool test rules`` runs deploy/monitoring/tests/, where every alert fires when it
should and stays silent when it should not, over series as the services export them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import Histogram

import shared.ops.metrics
from tests.deploy.test_consistency import exported_metric_names
from tests.support.prometheus import prometheus_binary
from tests.support.promql import RULES_FILE_PATH, rules_file_alerts

ALERT_TESTS = sorted((RULES_FILE_PATH.parent / "tests").glob("*.test.yaml"))


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [prometheus_binary("promtool"), *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def alert_rule_tests() -> list[dict[str, Any]]:
    return [
        check
        for path in ALERT_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for check in test.get("alert_rule_test", [])
    ]


def input_series() -> list[str]:
    return [
        series["series"]
        for path in ALERT_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for series in test.get("input_series", [])
    ]


def test_promtool_accepts_the_rules_file() -> None:
    checked = promtool("check", "rules", RULES_FILE_PATH)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_passes_its_promtool_unit_tests() -> None:
    assert ALERT_TESTS, "no promtool test files in deploy/monitoring/tests"
    tested = promtool("test", "rules", *ALERT_TESTS)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_is_tested_firing_and_silent() -> None:
    firing = {c["alertname"] for c in alert_rule_tests() if c.get("exp_alerts")}
    silent = {c["alertname"] for c in alert_rule_tests() if not c.get("exp_alerts")}
    alerts = {alert["alert"] for alert in rules_file_alerts()}
    assert alerts - firing == set(), "alerts never seen firing"
    assert alerts - silent == set(), "alerts never seen silent"


def test_alert_tests_feed_only_series_clickhook_exports() -> None:
    """A test over a metric or a histogram bucket the services do not export proves nothing
    (a p99 above the last finite bucket, for one, reads as that bucket's bound)."""
    defined = exported_metric_names() | {"up"}
    buckets = {
        f"{metric._name}_bucket": {*map(str, metric._upper_bounds[:-1]), "+Inf"}
        for metric in vars(shared.ops.metrics).values()
        if isinstance(metric, Histogram)
    }
    for series in input_series():
        name = series.split("{", 1)[0]
        assert name in defined, series
        le = re.search(r'le="([^"]+)"', series)
        if le is not None:
            assert le.group(1) in buckets[name], f"{series}: not a bucket of {name}"
