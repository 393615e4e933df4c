"""The docs site's generated reference: a MkDocs hook (mkdocs.yml ``hooks:``) that fills each
``<!-- generated: NAME -->`` marker of a page from the code that defines it, at build time.

- ``api``: the HTTP API, from the OpenAPI document ingest serves (services/ingest/openapi.py),
- ``settings``: the settings table, from SETTING_DOCS next to load_settings (shared/ops),
- ``metrics``: the metrics table, from the Prometheus metrics defined in shared/ops/metrics.py.

Nothing is written into docs/: the pages hold the markers, the built site the tables, so
neither can drift from the code. The renderers are plain functions (tests/deploy/test_docs.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from services.ingest.openapi import openapi_document
from shared.ops import metrics
from shared.ops.settings import SETTING_DOCS

MARKER = re.compile(r"<!--\s*generated:\s*(?P<name>[a-z]+)\s*-->")
METHODS = ("get", "post", "put", "patch", "delete")
REF = "#/components/schemas/"


def cell(text: str) -> str:
    """Text that stays inside one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def settings_table() -> str:
    rows = [f"| `{doc.name}` | {cell(doc.default)} | {cell(doc.meaning)} |" for doc in SETTING_DOCS]
    return "\n".join(["| variable | default | meaning |", "|---|---|---|", *rows]) + "\n"


def defined_metrics() -> list[MetricWrapperBase]:
    """Every metric shared/ops/metrics.py defines, by name."""
    found = [value for value in vars(metrics).values() if isinstance(value, MetricWrapperBase)]
    return sorted(found, key=exported_name)


def exported_name(metric: MetricWrapperBase) -> str:
    """The name Prometheus scrapes: counters carry ``_total``."""
    name: str = metric._name  # prometheus_client keeps no public accessor
    return f"{name}_total" if metric._type == "counter" else name


def metrics_table() -> str:
    rows = []
    for metric in defined_metrics():
        labels = ", ".join(f"`{label}`" for label in metric._labelnames)
        kind = metric._type
        help_text = cell(metric._documentation)
        rows.append(f"| `{exported_name(metric)}` | {kind} | {labels or '—'} | {help_text} |")
    return "\n".join(["| metric | type | labels | what |", "|---|---|---|---|", *rows]) + "\n"


def _type_of(schema: dict[str, Any]) -> str:
    """A schema in a few words: ``string``, ``integer or null``, ``[Attempt](#attempt)``."""
    ref = schema.get("$ref")
    if ref is not None:
        name = ref.removeprefix(REF)
        return f"[{name}](#{name.lower()})"
    for union in ("anyOf", "oneOf"):
        if union in schema:
            return " or ".join(_type_of(option) for option in schema[union])
    if "enum" in schema:
        return " \\| ".join(f"`{value}`" for value in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type_of(schema.get('items', {}))}"
    if isinstance(kind, list):
        return " or ".join(kind)
    return str(kind)


def _operation(
    path: str, method: str, operation: dict[str, Any], shared: list[dict[str, Any]]
) -> Iterator[str]:
    yield f"### {method.upper()} `{path}`\n"
    if operation.get("summary"):
        yield f"{operation['summary']}.\n"
    if operation.get("description"):
        yield f"{operation['description']}\n"
    parameters = [*shared, *operation.get("parameters", [])]  # the path's, then its own
    if parameters:
        yield "| parameter | in | type | meaning |\n|---|---|---|---|"
        for parameter in parameters:
            kind = _type_of(parameter.get("schema", {}))
            meaning = cell(parameter.get("description", ""))
            yield f"| `{parameter['name']}` | {parameter['in']} | {kind} | {meaning} |"
        yield ""
    body = operation.get("requestBody", {}).get("content", {})
    for media, content in body.items():
        yield f"Body (`{media}`): {_type_of(content.get('schema', {}))}\n"
    yield "| status | meaning | body |\n|---|---|---|"
    for status, response in operation.get("responses", {}).items():
        content = response.get("content", {}).get("application/json", {})
        kind = _type_of(content["schema"]) if "schema" in content else "—"
        yield f"| {status} | {cell(response.get('description', ''))} | {kind} |"
    yield ""


def _schema(name: str, schema: dict[str, Any]) -> Iterator[str]:
    yield f"### {name}\n"
    if schema.get("description"):
        yield f"{cell(schema['description'])}\n"
    properties = schema.get("properties", {})
    if not properties:
        yield f"{_type_of(schema)}\n"
        return
    required = set(schema.get("required", []))
    yield "| field | type | required | meaning |\n|---|---|---|---|"
    for field, spec in properties.items():
        need = "yes" if field in required else ""
        meaning = cell(spec.get("description", ""))
        yield f"| `{field}` | {_type_of(spec)} | {need} | {meaning} |"
    yield ""


def api_reference(document: dict[str, Any]) -> str:
    """The OpenAPI document as Markdown: each route, then each schema."""
    lines = ["## Routes\n"]
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                lines.extend(_operation(path, method, item[method], item.get("parameters", [])))
    lines.append("## Schemas\n")
    for name, schema in document["components"]["schemas"].items():
        lines.extend(_schema(name, schema))
    return "\n".join(lines) + "\n"


GENERATORS: dict[str, Callable[[], str]] = {
    "api": lambda: api_reference(openapi_document()),
    "settings": settings_table,
    "metrics": metrics_table,
}


def fill(markdown: str) -> str:
    """The page with each marker replaced by what it names; an unknown name fails the build."""

    def generated(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in GENERATORS:
            raise ValueError(f"no generator {name!r}: one of {sorted(GENERATORS)}")
        return GENERATORS[name]()

    return MARKER.sub(generated, markdown)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs hook: every page passes through, only those with markers change."""
    return fill(markdown)
