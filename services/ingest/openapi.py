"""The OpenAPI 3.1 document of the ingest API, served at /openapi.json.

Request bodies of the endpoint routes come from the same msgspec structs that validate them,
so the document cannot drift from the code that enforces it.
"""

from __future__ import annotations

from typing import Any, get_args

import msgspec

from services.ingest.backfill_api import BackfillRequest
from services.ingest.endpoints_api import EndpointCreate, EndpointPatch, ReplayRequest
from shared.backfill import BackfillState
from shared.messages import EndpointFilters, PayloadFormat, SignatureStyle

REF = "#/components/schemas/{name}"

CLICK_EVENT: dict[str, Any] = {
    "type": "object",
    "description": "A click. Unknown fields are kept and passed through to receivers.",
    "required": ["type", "account_id", "occurred_at", "link"],
    "properties": {
        "id": {"type": "string", "maxLength": 200, "description": "assigned when absent"},
        "type": {"type": "string", "minLength": 1, "maxLength": 100},
        "account_id": {"type": "string", "minLength": 1, "maxLength": 200},
        "occurred_at": {"type": "string", "format": "date-time"},
        "link": {
            "type": "object",
            "required": ["id"],
            "properties": {
                "id": {"type": "string", "minLength": 1, "maxLength": 200},
                "domain": {"type": ["string", "null"]},
                "key": {"type": ["string", "null"]},
                "url": {"type": ["string", "null"]},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 200}},
            },
        },
        "click": {"type": "object"},
    },
}

ENDPOINT: dict[str, Any] = {
    "type": "object",
    "required": ["id", "account_id", "url", "enabled", "created_at", "updated_at"],
    "properties": {
        "id": {"type": "string"},
        "account_id": {"type": "string"},
        "url": {"type": "string"},
        "description": {"type": "string"},
        "filters": {"$ref": REF.format(name="EndpointFilters")},
        "rate_limit_per_s": {"type": ["number", "null"]},
        "enabled": {"type": "boolean"},
        "disabled_reason": {"type": ["string", "null"]},
        "format": {"type": "string", "enum": list(get_args(PayloadFormat))},
        "signature_styles": {
            "type": "array",
            "items": {"type": "string", "enum": list(get_args(SignatureStyle))},
        },
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}

ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["field", "problem"],
                        "properties": {
                            "index": {"type": "integer"},
                            "field": {"type": "string"},
                            "problem": {"type": "string"},
                        },
                    },
                },
            },
        }
    },
}


BACKFILL_NOTE = (
    "Progress lives in the memory of the ingest instance that started the backfill: status and "
    "cancel answer 404 on other instances and after a restart."
)

_COUNT = {"type": "integer", "minimum": 0}
BACKFILL_STATUS: dict[str, Any] = {
    "type": "object",
    "required": [
        "endpoint_id",
        "state",
        "since",
        "until",
        "max_clicks",
        "scanned",
        "matched",
        "scheduled",
        "started_at",
        "finished_at",
        "error",
    ],
    "properties": {
        "endpoint_id": {"type": "string"},
        "state": {"type": "string", "enum": list(get_args(BackfillState))},
        "since": {"type": "string", "format": "date-time"},
        "until": {"type": "string", "format": "date-time"},
        "max_clicks": {"type": "integer"},
        "scanned": {**_COUNT, "description": "records of `clicks` read"},
        "matched": {**_COUNT, "description": "clicks of the window this endpoint wants, queued"},
        "scheduled": {**_COUNT, "description": "of those, acknowledged by the broker"},
        "started_at": {"type": "string", "format": "date-time"},
        "finished_at": {"type": ["string", "null"], "format": "date-time"},
        "error": {"type": ["string", "null"]},
    },
}


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


def _schemas() -> dict[str, Any]:
    _, generated = msgspec.json.schema_components(
        [EndpointCreate, EndpointPatch, ReplayRequest, BackfillRequest, EndpointFilters],
        ref_template=REF,
    )
    return {
        **generated,
        "ClickEvent": CLICK_EVENT,
        "Endpoint": ENDPOINT,
        "CreatedEndpoint": {
            "allOf": [
                _ref("Endpoint"),
                {
                    "type": "object",
                    "required": ["secret"],
                    "properties": {"secret": {"type": "string"}},
                },
            ]
        },
        "EndpointList": {
            "type": "object",
            "required": ["data"],
            "properties": {"data": {"type": "array", "items": _ref("Endpoint")}},
        },
        "Accepted": {
            "type": "object",
            "required": ["accepted", "ids"],
            "properties": {
                "accepted": {"type": "integer"},
                "ids": {"type": "array", "items": {"type": "string"}},
            },
        },
        "RotatedSecret": {
            "type": "object",
            "required": ["id", "secret", "previous_secret_expires_at"],
            "properties": {
                "id": {"type": "string"},
                "secret": {"type": "string"},
                "previous_secret_expires_at": {"type": "string", "format": "date-time"},
            },
        },
        "ReplayReport": {
            "type": "object",
            "required": ["endpoint_id", "matched", "replayed", "already_delivered"],
            "properties": {
                "endpoint_id": {"type": "string"},
                "matched": {"type": "integer"},
                "replayed": {"type": "integer"},
                "already_delivered": {"type": "integer"},
            },
        },
        "BackfillStatus": BACKFILL_STATUS,
        "Error": ERROR,
    }


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
