"""The delivery log's and the portal's routes are in the OpenAPI document, and every example
there is valid against the schema generated from the structs that build the answers."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from services.ingest.openapi import openapi_document

DOCUMENT = openapi_document()
ROUTES = (
    ("/v1/endpoints/{endpoint_id}/attempts", "get"),
    ("/v1/endpoints/{endpoint_id}/attempts/{attempt_id}", "get"),
    ("/v1/events/{event_id}/attempts", "get"),
    ("/v1/endpoints/{endpoint_id}/stats", "get"),
    ("/v1/endpoints/{endpoint_id}/dead-letters", "get"),
    ("/v1/endpoints/{endpoint_id}/test", "post"),
    ("/v1/portal/sessions", "post"),
)


def examples() -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path, method in ROUTES:
        for status, response in DOCUMENT["paths"][path][method]["responses"].items():
            media = response.get("content", {}).get("application/json", {})
            if "example" in media:
                found.append((f"{method} {path} {status}", media["schema"], media["example"]))
    return found


@pytest.mark.parametrize(("route", "schema", "example"), examples(), ids=lambda v: str(v)[:60])
def test_each_example_matches_its_generated_schema(
    route: str, schema: dict[str, Any], example: dict[str, Any]
) -> None:
    root = {**schema, "components": DOCUMENT["components"]}
    jsonschema.Draft202012Validator(root).validate(example)


def test_every_route_of_the_delivery_log_has_an_example() -> None:
    assert len(examples()) == len(ROUTES)
