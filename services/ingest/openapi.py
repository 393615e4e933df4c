"""The OpenAPI 3.1 document of the ingest API, served at /openapi.json.

Every schema comes from the msgspec structs in ``api_types`` (and the wire model's click and
endpoint) that decode the requests and build the answers, so the document cannot drift from
the code that enforces it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from services.ingest.api_types import (
    Accepted,
    BackfillRequest,
    BackfillStatus,
    EndpointCreate,
    EndpointPatch,
    Error,
    ReplayReport,
    ReplayRequest,
    RotatedSecret,
)
from shared.model.messages import ClickFields, Endpoint

REF = "#/components/schemas/{name}"

BACKFILL_NOTE = (
    "Progress lives in the memory of the ingest instance that started the backfill: status and "
    "cancel answer 404 on other instances and after a restart."
)


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"description": "error", **_json(_ref("Error"))} for s in statuses}


def _ok(status: int, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {str(status): {"description": description, **_json(schema)}}


def _body(name: str) -> dict[str, Any]:
    return {"required": True, **_json(_ref(name))}


ENDPOINT_ERRORS = (400, 401, 404, 415, 422, 503)
ENDPOINT_ID = {"name": "endpoint_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _paths() -> dict[str, Any]:
    with_id = {"parameters": [ENDPOINT_ID]}
    return {
        "/v1/clicks": {
            "post": {
                "summary": "Publish clicks: one event, a JSON array, or NDJSON",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    _ref("ClickEvent"),
                                    {"type": "array", "items": _ref("ClickEvent")},
                                ]
                            }
                        },
                        "application/x-ndjson": {"schema": {"type": "string"}},
                    },
                },
                "responses": {
                    **_ok(202, _ref("Accepted"), "every event acknowledged by the broker"),
                    **_errors(400, 401, 413, 415, 422, 503),
                },
            }
        },
        "/v1/endpoints": {
            "post": {
                "summary": "Register an endpoint; the answer holds its signing secret",
                "requestBody": _body("EndpointCreate"),
                "responses": {
                    **_ok(201, _ref("CreatedEndpoint"), "created"),
                    **_errors(*ENDPOINT_ERRORS),
                },
            },
            "get": {
                "summary": "The account's endpoints",
                "responses": {**_ok(200, _ref("EndpointList"), "endpoints"), **_errors(401)},
            },
        },
        "/v1/endpoints/{endpoint_id}": {
            **with_id,
            "get": {
                "summary": "One endpoint",
                "responses": {**_ok(200, _ref("Endpoint"), "the endpoint"), **_errors(401, 404)},
            },
            "patch": {
                "summary": "Change an endpoint",
                "requestBody": _body("EndpointPatch"),
                "responses": {
                    **_ok(200, _ref("Endpoint"), "changed"),
                    **_errors(*ENDPOINT_ERRORS),
                },
            },
            "delete": {
                "summary": "Delete an endpoint",
                "responses": {"204": {"description": "deleted"}, **_errors(401, 404, 503)},
            },
        },
        "/v1/endpoints/{endpoint_id}/rotate-secret": {
            **with_id,
            "post": {
                "summary": "New secret; the old one keeps signing for the grace period",
                "responses": {
                    **_ok(200, _ref("RotatedSecret"), "rotated"),
                    **_errors(401, 404, 503),
                },
            },
        },
        "/v1/endpoints/{endpoint_id}/replay": {
            **with_id,
            "post": {
                "summary": "Put this endpoint's dead letters of a window back into delivery",
                "requestBody": _body("ReplayRequest"),
                "responses": {
                    **_ok(200, _ref("ReplayReport"), "replayed"),
                    **_errors(*ENDPOINT_ERRORS),
                },
            },
        },
        "/v1/endpoints/{endpoint_id}/backfill": {
            **with_id,
            "post": {
                "summary": "Deliver this endpoint's clicks of a past window (at most 7 days)",
                "description": BACKFILL_NOTE,
                "requestBody": _body("BackfillRequest"),
                "responses": {
                    **_ok(202, _ref("BackfillStatus"), "started"),
                    **_errors(*ENDPOINT_ERRORS, 409),
                },
            },
            "get": {
                "summary": "Progress of this endpoint's latest backfill",
                "description": BACKFILL_NOTE,
                "responses": {
                    **_ok(200, _ref("BackfillStatus"), "progress"),
                    **_errors(401, 404),
                },
            },
            "delete": {
                "summary": "Cancel the running backfill; deliveries already queued still go out",
                "responses": {
                    **_ok(200, _ref("BackfillStatus"), "cancelled"),
                    **_errors(401, 404, 409),
                },
            },
        },
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "ok"}}}},
        "/readyz": {
            "get": {
                "summary": "Readiness: broker reachable and endpoint table loaded",
                "responses": {
                    "200": {"description": "ready"},
                    "503": {"description": "not ready"},
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "text exposition format"}},
            }
        },
    }


# Every schema of the document, generated from the structs that decode and build the bodies.
STRUCTS: tuple[type[msgspec.Struct], ...] = (
    ClickFields,
    Endpoint,
    EndpointCreate,
    EndpointPatch,
    ReplayRequest,
    BackfillRequest,
    Accepted,
    RotatedSecret,
    ReplayReport,
    BackfillStatus,
    Error,
)
# Stored on the endpoint record, never shown by the API (see ``Endpoint.public_view``).
HIDDEN_ENDPOINT_FIELDS = ("secrets", "v")


def _schemas() -> dict[str, Any]:
    _, generated = msgspec.json.schema_components(STRUCTS, ref_template=REF)
    click = generated.pop("ClickFields")
    click["description"] = "A click. Unknown fields are kept and passed through to receivers."
    generated["ClickEvent"] = click
    endpoint = generated["Endpoint"]
    for name in HIDDEN_ENDPOINT_FIELDS:
        endpoint["properties"].pop(name)
        if name in endpoint.get("required", []):
            endpoint["required"].remove(name)
    generated.pop("EndpointSecret", None)
    generated["CreatedEndpoint"] = {
        "allOf": [
            _ref("Endpoint"),
            {
                "type": "object",
                "required": ["secret"],
                "properties": {"secret": {"type": "string"}},
            },
        ]
    }
    generated["EndpointList"] = {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"type": "array", "items": _ref("Endpoint")}},
    }
    return generated


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "clickhook ingest API",
            "version": "1",
            "description": "Click intake and endpoint registry of clickhook.",
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": _paths(),
    }
