"""The docs site: its generated reference covers what the code defines, and it builds --strict.

The renderers are deploy/tools/docs_reference.py (the site's MkDocs hook); `make docs` and
`make test` build the whole site with --strict, so a broken link or anchor fails.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from services.ingest.openapi import openapi_document
from shared.ops.settings import SETTING_DOCS
from tests.support.services import ROOT


def _load_reference() -> ModuleType:
    path = ROOT / "deploy" / "tools" / "docs_reference.py"
    spec = importlib.util.spec_from_file_location("docs_reference", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = _load_reference()


def test_the_settings_table_has_a_row_per_documented_variable() -> None:
    table = reference.settings_table()
    for doc in SETTING_DOCS:
        assert f"| `{doc.name}` |" in table


def test_the_metrics_table_names_every_metric_with_its_exported_name() -> None:
    table = reference.metrics_table()
    assert "| `clickhook_delivery_attempts_total` | counter | `service`, `outcome` |" in table
    assert "| `clickhook_kafka_consumer_lag` | gauge |" in table
    assert len(reference.defined_metrics()) == table.count("\n| `clickhook_")


def test_the_api_reference_has_every_route_and_schema_of_the_served_document() -> None:
    document = openapi_document()
    text = reference.api_reference(document)
    for path, item in document["paths"].items():
        for method in set(item) & set(reference.METHODS):
            assert f"### {method.upper()} `{path}`" in text
    for name in document["components"]["schemas"]:
        assert f"### {name}\n" in text


def test_a_marker_naming_no_generator_fails_the_build() -> None:
    with pytest.raises(ValueError, match="no generator 'nope'"):
        reference.fill("<!-- generated: nope -->")


def test_the_site_builds_strict(tmp_path: Path) -> None:
    """No broken link or anchor, every page in the nav; nothing fetched (fonts off)."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    built = subprocess.run(
        [str(Path(sys.executable).with_name("mkdocs")), "build", "--strict", "-d", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "reference" / "settings" / "index.html").exists()
    page = (tmp_path / "index.html").read_text()
    assert "fonts.googleapis.com" not in page
