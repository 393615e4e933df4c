"""Write deploy/monitoring/clickhook-rules.yaml: the alerts of the PrometheusRule as a plain
Prometheus rules file, for a Prometheus without the Operator (``rule_files:`` in
prometheus.yml).

Usage (repository root): .venv/bin/python deploy/tools/prometheus_rules.py [--check]
                         [--docs-url URL] [--output FILE]
  --check: exit 1 when the file differs from what would be written (make test's
  tests/deploy/test_monitoring.py checks the same).
  --docs-url: where your copy of the docs site is published (default: the placeholder
  https://clickhook.example/docs/); each alert's runbook_url becomes that address's runbook
  page, e.g. https://docs.example.net/clickhook/operations/alerts/#clickhookservicedown.
  --output: write there instead (a rules file with your docs address stays out of the repo).

deploy/k8s/components/monitoring/prometheusrule.yaml stays the one source of the alerts; this
file is its ``spec`` with a header, so the two never differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "deploy" / "k8s" / "components" / "monitoring" / "prometheusrule.yaml"
TARGET = ROOT / "deploy" / "monitoring" / "clickhook-rules.yaml"
HEADER = """\
# clickhook's alerts for Prometheus without the Operator: add this file to `rule_files:` in
# prometheus.yml. The scrape jobs must be named clickhook-ingest, clickhook-dispatcher and
# clickhook-retry (the PodMonitor's job names). Runbooks: runbook_url, on the docs site.
# Generated from deploy/k8s/components/monitoring/prometheusrule.yaml by
# deploy/tools/prometheus_rules.py: edit that file, then run the tool.
"""


# The docs address the PrometheusRule is written with (mkdocs.yml's site_url), and where the
# runbooks are on it: every runbook_url starts with both.
DEFAULT_DOCS_URL = "https://clickhook.example/docs/"
RUNBOOKS_PAGE = "operations/alerts/"


def with_docs_url(prometheus_rule: dict[str, Any], docs_url: str) -> dict[str, Any]:
    """The PrometheusRule with each runbook_url on ``docs_url`` instead of the default."""
    base = docs_url.rstrip("/") + "/"
    default = DEFAULT_DOCS_URL + RUNBOOKS_PAGE
    for group in prometheus_rule["spec"]["groups"]:
        for rule in group["rules"]:
            annotations = rule.get("annotations", {})
            url = annotations.get("runbook_url", "")
            if not url.startswith(default):
                raise ValueError(f"{rule.get('alert')}: runbook_url {url!r} is not under {default}")
            annotations["runbook_url"] = base + RUNBOOKS_PAGE + url.removeprefix(default)
    return prometheus_rule


class _Dumper(yaml.SafeDumper):
    """Multi-line expressions as literal blocks, as they are written in the PrometheusRule."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def rules_file(prometheus_rule: dict[str, Any]) -> str:
    """The rules file for a PrometheusRule object: its ``spec`` (``groups``), as YAML."""
    body = yaml.dump(
        {"groups": prometheus_rule["spec"]["groups"]},
        Dumper=_Dumper,
        sort_keys=False,
        width=1_000_000,  # one expression, one line: never folded
        allow_unicode=True,
    )
    return HEADER + body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    parser.add_argument(
        "--docs-url",
        default=DEFAULT_DOCS_URL,
        help=f"where the docs site is published (default {DEFAULT_DOCS_URL})",
    )
    parser.add_argument("--output", type=Path, default=TARGET, help="the file to write")
    args = parser.parse_args()
    wanted = rules_file(with_docs_url(yaml.safe_load(SOURCE.read_text()), args.docs_url))
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != wanted:
            print(f"{args.output} is out of date: run {Path(__file__).name}")
            return 1
        return 0
    args.output.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
