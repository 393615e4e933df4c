"""The OpenAPI document says where the API refuses unknown keys, and the API does as it says."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from services.ingest.openapi import openapi_document
from tests.integration.conftest import ACCOUNT_A, auth

pytestmark = pytest.mark.kafka

Client = TestClient[Any, Any]
UNKNOWN = "zz_not_a_field"
# Clicks keep unknown fields and pass them on to receivers, by design.
PASSTHROUGH = {"#/components/schemas/ClickEvent"}
DOCUMENT = openapi_document()


def objects_in(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object schema reachable from ``schema`` (``$ref``s followed, unions opened), with
    the path of the body that leads to it (``""``: the body itself)."""
    ref = schema.get("$ref")
    if ref is not None:
        if ref in PASSTHROUGH:
            return
        name = ref.rsplit("/", 1)[-1]
        yield from objects_in(DOCUMENT["components"]["schemas"][name], path)
        return
    for union in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(union, []):
            yield from objects_in(option, path)
    if schema.get("type") == "object" and "properties" in schema:
        yield path, schema
        for name, field in schema["properties"].items():
            yield from objects_in(field, f"{path}.{name}" if path else name)
    if schema.get("type") == "array" and "items" in schema:
        yield from objects_in(schema["items"], f"{path}[0]")


def request_bodies() -> Iterator[tuple[str, dict[str, Any]]]:
    for route, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "requestBody" in operation:
                content = operation["requestBody"]["content"]
                for media in content.values():
                    yield f"{method.upper()} {route}", media["schema"]


def with_unknown_key(body: dict[str, Any], path: str) -> dict[str, Any]:
    """``body`` with an unknown key added to the object at ``path``."""
    changed = dict(body)
    target = changed
    for name in filter(None, path.split(".")):
        target[name] = dict(target.get(name) or {})
        target = target[name]
    target[UNKNOWN] = 1
    return changed


def test_every_object_of_every_request_body_refuses_unknown_keys_in_the_document() -> None:
    lenient = [
        f"{operation}: {path or '(body)'}"
        for operation, schema in request_bodies()
        for path, found in objects_in(schema)
        if found.get("additionalProperties") is not False
    ]

    assert lenient == []


ENDPOINT_BODIES = [
    ("post", "/v1/endpoints", {"url": "https://hooks.example.com/in"}),
    ("patch", "/v1/endpoints/{endpoint_id}", {"description": "changed"}),
]


@pytest.mark.parametrize(("method", "route", "body"), ENDPOINT_BODIES)
async def test_each_object_the_document_marks_strict_refuses_an_unknown_key_naming_it(
    ingest: Client, method: str, route: str, body: dict[str, Any]
) -> None:
    created = await ingest.post(
        "/v1/endpoints", json={"url": "https://hooks.example.com/x"}, headers=auth(ACCOUNT_A)
    )
    url = route.format(endpoint_id=(await created.json())["id"])
    schema = DOCUMENT["paths"][route][method]["requestBody"]["content"]["application/json"]
    paths = [path for path, _ in objects_in(schema["schema"])]
    answers = []
    for path in paths:
        response = await ingest.request(
            method, url, json=with_unknown_key(body, path), headers=auth(ACCOUNT_A)
        )
        details = (await response.json())["error"]["details"]
        answers.append((response.status, details[0]["field"], details[0]["problem"]))

    assert "filters" in paths
    assert answers == [
        (422, f"{path}.{UNKNOWN}" if path else UNKNOWN, "unknown field") for path in paths
    ]
