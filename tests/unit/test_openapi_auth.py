"""The OpenAPI document states the auth failures as the API answers them (RFC 6750): wherever a
token is checked, 401 for a missing or unknown one and 403 ``insufficient_scope`` for a known
one without the scope (the answers themselves: tests/integration/test_ingest_auth.py)."""

from __future__ import annotations

from typing import Any

import pytest

from services.ingest.openapi import openapi_document

DOCUMENT = openapi_document()
OPERATIONS = [
    (f"{method.upper()} {path}", operation)
    for path, item in DOCUMENT["paths"].items()
    for method, operation in item.items()
    if method in ("get", "post", "put", "patch", "delete")
]
WITH_TOKEN = [(name, op) for name, op in OPERATIONS if "401" in op["responses"]]


def test_the_routes_that_check_a_token_are_documented() -> None:
    names = {name for name, _ in WITH_TOKEN}
    assert {"POST /v1/clicks", "GET /v1/endpoints", "POST /v1/endpoints"} <= names


@pytest.mark.parametrize(("name", "operation"), WITH_TOKEN, ids=[name for name, _ in WITH_TOKEN])
def test_every_route_that_answers_401_also_lists_403(name: str, operation: dict[str, Any]) -> None:
    responses = operation["responses"]

    assert "403" in responses, name
    assert "insufficient_scope" in responses["403"]["description"]
    assert "unknown token" in responses["401"]["description"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_routes_without_a_token_list_neither(path: str) -> None:
    responses = DOCUMENT["paths"][path]["get"]["responses"]

    assert "401" not in responses
    assert "403" not in responses
