"""The OpenAPI 3.1 document of the ingest API, served at /openapi.json.

Every schema comes from the msgspec structs in ``api_types`` (and the wire model's click and
endpoint) that decode the requests and build the answers, so the document cannot drift from
the code that enforces it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from services.ingest.api_types import (
    IMPORT_MAX_BYTES,
    IMPORT_MAX_LINES,
    Accepted,
    AttemptDetail,
    AttemptPage,
    BackfillRequest,
    BackfillStatus,
    DeadLetterPage,
    DeliverySummary,
    EndpointCreate,
    EndpointPatch,
    EndpointStats,
    Error,
    ImportCreated,
    ImportFailed,
    PortalSession,
    PortalSessionRequest,
    Preview,
    PreviewRequest,
    ReplayRequest,
    ReplayStatus,
    RotatedSecret,
    SentTestEvent,
    ServiceMeta,
)
from services.ingest.meta_api import META_MAX_AGE_S, META_PATH
from shared.kafka.fenced import MAX_WRITE_ATTEMPTS
from shared.model.messages import ClickFields, Endpoint
from shared.model.times import TIME_FORMATS

REF = "#/components/schemas/{name}"

REPLAY_NOTE = (
    "A job: it streams the endpoint's dead letters of the window back into the first retry "
    "tier, skipping those an earlier replay sent. Its progress is kept in Kafka, so any "
    "instance answers; a replay whose instance stopped shows as interrupted. One job per "
    "endpoint: a start while one runs (or racing one, on any instance) answers 409 "
    "`replay_running` with the running job's `replay.id` and progress in `details`."
)
PREVIEW_NOTE = (
    "Renders a click (a sample, or the body's event) in the endpoint's format, or in the format "
    "and template of the body (unsaved edits), and answers the body and headers a delivery "
    "would have: signed with the endpoint's secret as of now, custom header values masked. "
    "Nothing is sent. A template that fails on the click is a 422 naming the line or the limit."
)
BACKFILL_NOTE = (
    "Progress lives in the memory of the ingest instance that started the backfill: status and "
    "cancel answer 404 on other instances and after a restart."
)


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


# Wherever a token is checked, it may be a known token without the route's scope (RFC 6750).
ERROR_DESCRIPTIONS = {
    401: "missing or unknown token",
    403: "insufficient_scope: the token is known but its scope does not allow this",
}


def _errors(*statuses: int) -> dict[str, Any]:
    if 401 in statuses and 403 not in statuses:
        statuses = tuple(sorted((*statuses, 403)))
    return {
        str(s): {"description": ERROR_DESCRIPTIONS.get(s, "error"), **_json(_ref("Error"))}
        for s in statuses
    }


def _ok(status: int, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {str(status): {"description": description, **_json(schema)}}


def _body(name: str) -> dict[str, Any]:
    return {"required": True, **_json(_ref(name))}


ENDPOINT_ERRORS = (400, 401, 404, 415, 422, 503)
ENDPOINT_ID = {"name": "endpoint_id", "in": "path", "required": True, "schema": {"type": "string"}}

# --- concurrency: ETag and If-Match (services/ingest/endpoints_api.py) ---

CONCURRENCY_NOTE = (
    "Every answer that shows one endpoint carries its `ETag`, the endpoint's `version` in "
    'quotes (`"57"`); it changes with every write. PATCH, DELETE and rotate-secret honour '
    "`If-Match`: when it does not match the current ETag nothing is written and the answer is "
    "412 `precondition_failed`, with the current ETag in its `ETag` header. Without `If-Match` "
    "the change is applied to the latest version, whatever was written before it (last writer "
    "wins, field by field: a PATCH never brings back a secret rotated meanwhile). 409 "
    "`conflict`: other writes to the endpoint kept winning; send the request again."
)
CREATE_CONFLICT_NOTE = (
    "409 `conflict`: nothing was created, because other writes of endpoints (of any account, "
    f"on any instance) kept winning {MAX_WRITE_ATTEMPTS} times in a row, or the new id was "
    "taken; send the request again."
)
STRICT_BODY_NOTE = (
    "Keys the schema does not name are refused at any depth (`additionalProperties: false`, "
    "filters included): 422 `invalid_request`, with the key's path in `details` "
    "(`filters.tag`: `unknown field`)."
)
IMPORT_NOTE = (
    "Each non-blank line is an endpoint create body (schema EndpointCreate), checked and "
    "answered as POST /v1/endpoints would: a line of ImportCreated (its `id`, `secret` and "
    "`version`, the ETag without quotes) or of ImportFailed (the `status` and `error` object "
    "a single create of that line would answer), with its `line` number (from 1, blank lines "
    "counted and skipped), in the order sent. A failing line takes no other with it. The "
    "creates are committed in batches (transactions of up to 500) and the answer streams as "
    f"they commit. At most {IMPORT_MAX_LINES:,} lines and {IMPORT_MAX_BYTES:,} bytes per "
    "request (413 `payload_too_large`, nothing created): send a bigger file in parts "
    "(`clickhook endpoints import FILE` does)."
)
ETAG = {
    "ETag": {
        "description": 'the endpoint\'s version as a strong entity tag, e.g. `"57"`',
        "schema": {"type": "string"},
    }
}
IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": "write only if the endpoint's ETag is this one (or one of these); "
    "`*`: any version",
    "schema": {"type": "string"},
}
CONDITIONAL_ERRORS = (409, 412)


def _with_etag(responses: dict[str, Any]) -> dict[str, Any]:
    """The success answers of ``responses`` with the ``ETag`` header documented."""
    return {
        status: {**answer, "headers": ETAG} if status.startswith("2") else answer
        for status, answer in responses.items()
    }


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
                "description": f"{STRICT_BODY_NOTE}\n\n{CREATE_CONFLICT_NOTE}",
                "requestBody": _body("EndpointCreate"),
                "responses": {
                    **_with_etag(_ok(201, _ref("CreatedEndpoint"), "created")),
                    **_errors(*ENDPOINT_ERRORS, 409),
                },
            },
            "get": {
                "summary": "The account's endpoints",
                "responses": {**_ok(200, _ref("EndpointList"), "endpoints"), **_errors(401)},
            },
        },
        "/v1/endpoints/import": {
            "post": {
                "summary": "Register many endpoints: NDJSON in, one result line per endpoint out",
                "description": IMPORT_NOTE,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-ndjson": {
                            "schema": {
                                "type": "string",
                                "description": "one EndpointCreate (JSON) per line",
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "one line per non-blank line sent, in order",
                        "content": {
                            "application/x-ndjson": {
                                "schema": {"oneOf": [_ref("ImportCreated"), _ref("ImportFailed")]}
                            }
                        },
                    },
                    **_errors(401, 413, 415),
                },
            }
        },
        "/v1/endpoints/{endpoint_id}": {
            **with_id,
            "description": CONCURRENCY_NOTE,
            "get": {
                "summary": "One endpoint",
                "responses": {
                    **_with_etag(_ok(200, _ref("Endpoint"), "the endpoint")),
                    **_errors(401, 404),
                },
            },
            "patch": {
                "summary": "Change an endpoint: the fields the body names, on its latest version",
                "description": f"{CONCURRENCY_NOTE}\n\n{STRICT_BODY_NOTE}",
                "parameters": [IF_MATCH],
                "requestBody": _body("EndpointPatch"),
                "responses": {
                    **_with_etag(_ok(200, _ref("Endpoint"), "changed")),
                    **_errors(*ENDPOINT_ERRORS, *CONDITIONAL_ERRORS),
                },
            },
            "delete": {
                "summary": "Delete an endpoint",
                "description": CONCURRENCY_NOTE,
                "parameters": [IF_MATCH],
                "responses": {
                    "204": {"description": "deleted"},
                    **_errors(401, 404, 503, *CONDITIONAL_ERRORS),
                },
            },
        },
        "/v1/endpoints/{endpoint_id}/rotate-secret": {
            **with_id,
            "post": {
                "summary": "New secret; the old one keeps signing for the grace period",
                "description": CONCURRENCY_NOTE,
                "parameters": [IF_MATCH],
                "responses": {
                    **_with_etag(_ok(200, _ref("RotatedSecret"), "rotated")),
                    **_errors(401, 404, 503, *CONDITIONAL_ERRORS),
                },
            },
        },
        "/v1/endpoints/{endpoint_id}/preview": {
            **with_id,
            "post": {
                "summary": "The request a click would be delivered with; nothing is sent",
                "description": PREVIEW_NOTE,
                "requestBody": {**_body("PreviewRequest"), "required": False},
                "responses": {
                    **_ok(200, _ref("Preview"), "the body and headers"),
                    **_errors(401, 404, 415, 422),
                },
            },
        },
        "/v1/endpoints/{endpoint_id}/replay": {
            **with_id,
            "post": {
                "summary": "Start putting this endpoint's dead letters of a window back into"
                " delivery",
                "description": REPLAY_NOTE,
                "requestBody": _body("ReplayRequest"),
                "responses": {
                    **_ok(202, _ref("ReplayStatus"), "started"),
                    **_errors(*ENDPOINT_ERRORS, 409),
                },
            },
            "get": {
                "summary": "Progress of this endpoint's latest replay",
                "description": REPLAY_NOTE,
                "responses": {
                    **_ok(200, _ref("ReplayStatus"), "progress"),
                    **_errors(401, 404),
                },
            },
            "delete": {
                "summary": "Cancel the running replay; letters already sent are still delivered",
                "responses": {
                    **_ok(200, _ref("ReplayStatus"), "cancelled"),
                    **_errors(401, 404, 409),
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
        **_delivery_log_paths(),
        META_PATH: _meta_path(),
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


# --- GET /v1/meta (services/ingest/meta_api.py) ---

META_NOTE = (
    "No token. Receivers allowlist `egress_cidrs` (declared by the operator in "
    "CLICKHOOK_EGRESS_CIDRS) and check signatures as `signature_schemes` says. The answer is "
    f"fixed until the service restarts: cached for {META_MAX_AGE_S} s, revalidated with "
    "If-None-Match (304)."
)


def _meta_path() -> dict[str, Any]:
    cached = {
        "ETag": {"description": "the answer's version", "schema": {"type": "string"}},
        "Cache-Control": {
            "description": f"`public, max-age={META_MAX_AGE_S}`",
            "schema": {"type": "string"},
        },
    }
    return {
        "get": {
            "summary": "Egress address ranges, signature schemes, retry schedule, version and"
            " event types",
            "description": META_NOTE,
            "security": [],
            "parameters": [
                {
                    "name": "If-None-Match",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                }
            ],
            "responses": {
                "200": {**_ok(200, _ref("ServiceMeta"), "the facts")["200"], "headers": cached},
                "304": {"description": "unchanged since the ETag given", "headers": cached},
            },
        }
    }


# --- the delivery log and the portal (services/ingest/delivery_log, services/ingest/portal) ---

LOG_NOTE = (
    "Served by every ingest instance from its own index of webhook.attempts and webhook.dlq, "
    "built from the topics: `index` says how far behind it is, and since when it is complete "
    "(`complete_since`: a fresh instance reads the newest hour first, then older history; "
    "history the byte budget dropped moves it later). "
    "The log keeps 7 days "
    "(the topic's retention), at most CLICKHOOK_DELIVERY_LOG_PER_ENDPOINT attempts per "
    "endpoint, newest first, and at most CLICKHOOK_DELIVERY_LOG_MAX_BYTES in all, the oldest "
    "going first; cursors are valid on every instance. While the index cannot answer (its disk "
    "full, its file being rebuilt) these routes answer 503 `delivery_log_unavailable` with "
    "`Retry-After`; the log recovers by itself, and clicks and endpoints never depend on it."
)
EXAMPLE_INDEX = {"caught_up": True, "behind": 0, "complete_since": None}
EXAMPLE_ATTEMPT = {
    "id": "att_2_18042",
    "webhook_id": "msg_2kq5yq3hd7x6m4rj2a5mqbz5bu",
    "event_id": "evt_5f0c6b1e2d3a4f5e8a9b0c1d2e3f4a5b",
    "endpoint_id": "ep_3b8f1c2d4e5f6a7b8c9d0e1f",
    "attempt": 2,
    "at": "2026-11-27T11:00:05.412Z",
    "outcome": "http_5xx",
    "status": 503,
    "duration_ms": 41.7,
    "error": None,
    "response_body": "upstream unavailable",
    "next_attempt_at": "2026-11-27T11:05:05.412Z",
    "dead_letter_reason": None,
    "deferred_because": None,
    "breaker": "closed",
}
EXAMPLE_WINDOW = {
    "attempts": 1200,
    "successes": 1188,
    "failures": {"5xx": 9, "timeout": 3},
    "deferred": 4,
    "success_rate": 0.99,
    "duration": {"p50_ms": 42.0, "p99_ms": 512.0},
}
EXAMPLE_LAST_ERROR = {
    "at": "2026-11-27T11:00:05.412Z",
    "webhook_id": "msg_2kq5yq3hd7x6m4rj2a5mqbz5bu",
    "outcome": "http_5xx",
    "status": 503,
    "error": None,
    "recovered_at": "2026-11-27T11:02:41.007Z",
}
PAGE_PARAMETERS = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 250}},
    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
]


def _query(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": {"type": "string"}}


def _example(status: int, name: str, description: str, example: Any) -> dict[str, Any]:
    content = {"application/json": {"schema": _ref(name), "example": example}}
    return {str(status): {"description": description, "content": content}}


def _delivery_log_paths() -> dict[str, Any]:
    with_id = {"parameters": [ENDPOINT_ID]}
    attempt_page = {
        "data": [EXAMPLE_ATTEMPT],
        "next_cursor": "MTc2NDIzMTIwNTQxMi4x",
        "index": EXAMPLE_INDEX,
    }
    detail = {
        **EXAMPLE_ATTEMPT,
        "request_headers": {
            "webhook-id": EXAMPLE_ATTEMPT["webhook_id"],
            "content-type": "application/json",
        },
        "request_body": '{"type":"link.clicked","timestamp":"2026-11-27T11:00:00.123Z","data":{}}',
        "request_available": True,
    }
    stats = {
        "endpoint_id": EXAMPLE_ATTEMPT["endpoint_id"],
        "last_hour": {**EXAMPLE_WINDOW, "attempts": 50, "successes": 49, "failures": {"5xx": 1}},
        "last_24h": EXAMPLE_WINDOW,
        "breaker": "closed",
        "waiting": 2,
        "dead_letters_open": 1,
        "last_error": EXAMPLE_LAST_ERROR,
        "index": EXAMPLE_INDEX,
    }
    history = {
        k: EXAMPLE_ATTEMPT[k]
        for k in ("attempt", "at", "outcome", "status", "duration_ms", "error", "response_body")
    }
    letters = {
        "data": [
            {
                "id": "dlq_4_311",
                "webhook_id": EXAMPLE_ATTEMPT["webhook_id"],
                "event_id": EXAMPLE_ATTEMPT["event_id"],
                "reason": "exhausted",
                "dead_at": "2026-11-28T15:10:02.000Z",
                "attempts": [history],
                "replayed": True,
                "replay_id": "rpl_7d1f0c2b",
                "delivery": "delivered",
            }
        ],
        "next_cursor": None,
        "index": EXAMPLE_INDEX,
    }
    status_values = "success, failure, deferred, a status class such as 5xx, or a code such as 503"
    return {
        "/v1/endpoints/{endpoint_id}/attempts": {
            **with_id,
            "get": {
                "summary": "The endpoint's delivery log, newest first",
                "description": LOG_NOTE,
                "parameters": [
                    *PAGE_PARAMETERS,
                    _query("status", status_values),
                    _query("since", f"attempts at or after this time: {TIME_FORMATS}"),
                    _query("until", f"attempts before this time: {TIME_FORMATS}"),
                    _query("event_id", "one event's attempts"),
                ],
                "responses": {
                    **_example(200, "AttemptPage", "a page of attempts", attempt_page),
                    **_errors(401, 404, 422, 503),
                },
            },
        },
        "/v1/endpoints/{endpoint_id}/attempts/{attempt_id}": {
            "parameters": [
                ENDPOINT_ID,
                {
                    "name": "attempt_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                },
            ],
            "get": {
                "summary": "One attempt, with the request it sent (read back from the topic)",
                "responses": {
                    **_example(200, "AttemptDetail", "the attempt", detail),
                    **_errors(401, 404, 503),
                },
            },
        },
        "/v1/events/{event_id}/attempts": {
            "parameters": [
                {"name": "event_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": {
                "summary": "One click's deliveries across the account's endpoints",
                "description": LOG_NOTE,
                "parameters": [*PAGE_PARAMETERS, _query("account_id", "admin tokens only")],
                "responses": {
                    **_example(200, "AttemptPage", "a page of attempts", attempt_page),
                    **_errors(401, 422, 503),
                },
            },
        },
        "/v1/endpoints/{endpoint_id}/stats": {
            **with_id,
            "get": {
                "summary": "Delivery health over the last hour and 24 hours",
                "description": "The same, short, is `delivery` on GET /v1/endpoints/{id}"
                " (schema DeliverySummary; left out while the delivery log is unavailable).",
                "responses": {
                    **_example(200, "EndpointStats", "the figures", stats),
                    **_errors(401, 404, 503),
                },
            },
        },
        "/v1/endpoints/{endpoint_id}/dead-letters": {
            **with_id,
            "get": {
                "summary": "The endpoint's dead letters, newest first, with their history and"
                " whether a replay put them back",
                "parameters": PAGE_PARAMETERS,
                "responses": {
                    **_example(200, "DeadLetterPage", "a page of dead letters", letters),
                    **_errors(401, 404, 422, 503),
                },
            },
        },
        "/v1/endpoints/{endpoint_id}/test": {
            **with_id,
            "post": {
                "summary": 'Send a sample link.clicked ("test": true) to this endpoint only,'
                " through the real pipeline",
                "responses": {
                    **_example(
                        202,
                        "SentTestEvent",
                        "published; follow webhook_id in the log",
                        {
                            "endpoint_id": EXAMPLE_ATTEMPT["endpoint_id"],
                            "event_id": EXAMPLE_ATTEMPT["event_id"],
                            "webhook_id": EXAMPLE_ATTEMPT["webhook_id"],
                        },
                    ),
                    **_errors(401, 404, 409, 503),
                },
            },
        },
        "/v1/portal/sessions": {
            "post": {
                "summary": "A one-time link into the customer portal for the token's account",
                "description": "Valid for 5 minutes and one use; opening it starts a session"
                " of one hour. Admin tokens name the account. 503 `portal_disabled` when the"
                " deployment has no portal key (CLICKHOOK_PORTAL_KEY).",
                "requestBody": {"required": False, **_json(_ref("PortalSessionRequest"))},
                "responses": {
                    **_example(
                        201,
                        "PortalSession",
                        "the link",
                        {
                            "url": "https://hooks.example.com/portal/open?token=eyJr…",
                            "expires_at": "2026-11-27T11:05:00Z",
                        },
                    ),
                    **_errors(401, 404, 415, 422, 503),
                },
            },
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
    PreviewRequest,
    Preview,
    Accepted,
    RotatedSecret,
    ReplayStatus,
    BackfillStatus,
    Error,
    AttemptPage,
    AttemptDetail,
    EndpointStats,
    DeliverySummary,
    ImportCreated,
    ImportFailed,
    DeadLetterPage,
    SentTestEvent,
    PortalSessionRequest,
    PortalSession,
    ServiceMeta,
)
# Stored on the endpoint record, never shown by the API (see ``Endpoint.public_view``).
HIDDEN_ENDPOINT_FIELDS = ("secrets", "v")


def _schemas() -> dict[str, Any]:
    _, generated = msgspec.json.schema_components(STRUCTS, ref_template=REF)
    click = generated.pop("ClickFields")
    click["description"] = "A click. Unknown fields are kept and passed through to receivers."
    click["properties"]["id"]["description"] = (
        "The click's id; receivers dedupe on the webhook-id derived from it. Optional: ingest "
        "assigns one (`evt_` and 32 hex digits), and a click produced straight to the clicks "
        "topic without one gets one from its position, `evt_<topic>-<partition>-<offset>`, the "
        "same for every redelivery, replay and replica."
    )
    generated["ClickEvent"] = click
    endpoint = generated["Endpoint"]
    for name in HIDDEN_ENDPOINT_FIELDS:
        endpoint["properties"].pop(name)
        if name in endpoint.get("required", []):
            endpoint["required"].remove(name)
    # Every endpoint the API shows was read from the topic: it always has its version, and the
    # default (an endpoint not read yet) never shows.
    endpoint["properties"]["version"].pop("default", None)
    endpoint["required"] = [*endpoint.get("required", []), "version"]
    generated.pop("EndpointSecret", None)
    # GET /v1/endpoints/{id} adds the delivery log's summary (not a stored field).
    endpoint["properties"]["delivery"] = _ref("DeliverySummary")
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
            "description": "Click intake, the endpoint registry and the delivery log of clickhook.",
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": _paths(),
    }
