"""Property-based fuzzing of the ingest API against its own OpenAPI document.

Whatever arrives, the answer is never a 5xx, always matches the documented schema, and no
event that fails validation ever reaches the ``clicks`` topic.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jsonschema
import orjson
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.openapi import openapi_document
from shared.model.messages import validate_click
from shared.ops.settings import Settings
from tests.integration.conftest import ACCOUNT_A, PUBLISH, auth
from tests.support.topics import read_records

pytestmark = pytest.mark.kafka

Client = TestClient[Any, Any]
EXAMPLES = 150

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)

VALID_CLICK: dict[str, Any] = {
    "type": "link.clicked",
    "occurred_at": "2026-11-27T11:00:00Z",
    "account_id": "acc_a",
    "link": {"id": "lnk_1", "domain": "短.be", "tags": ["a"]},
}


@st.composite
def mutated_clicks(draw: st.DrawFn) -> Any:
    """A valid click with one field replaced, removed or added."""
    event: dict[str, Any] = orjson.loads(orjson.dumps(VALID_CLICK))
    event["occurred_at"] = datetime.now(UTC).isoformat()
    target = draw(st.sampled_from(["type", "occurred_at", "account_id", "link", "id", "extra"]))
    action = draw(st.sampled_from(["replace", "remove", "huge"]))
    if action == "remove":
        event.pop(target, None)
    elif action == "huge":
        event[target] = "x" * draw(st.sampled_from([201, 9000, 200_000]))
    else:
        event[target] = draw(json_values)
    return event


raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.just(b"[" * 50_000 + b"]" * 50_000),
    st.just(b'{"type": NaN}'),
    st.just(b'{"type": "a", "type": "b", "account_id": "acc_a"}'),
    st.just(b'"\xff\xfe"'),
    st.just(b'{"type": "link.cli'),
    st.just(b"null"),
    st.just(b'{"type": "t", "account_id": 123456789012345678901234567890}'),
    st.just(b"[]"),
)


def examples(strategy: st.SearchStrategy[Any]) -> list[Any]:
    """Draw examples with hypothesis' generator; the HTTP calls then run on the test's loop."""
    drawn: list[Any] = []

    @settings(
        max_examples=EXAMPLES,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: Any) -> None:
        drawn.append(value)

    collect()
    return drawn


def response_schema(path: str, method: str, status: int) -> dict[str, Any]:
    document = openapi_document()
    responses = document["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} answered undocumented {status}"
    schema: dict[str, Any] = responses[str(status)]["content"]["application/json"]["schema"]
    return {**schema, "components": document["components"]}


async def post_and_check(
    client: Client, path: str, token: str, body: bytes
) -> tuple[int, dict[str, Any]]:
    response = await client.post(
        path, data=body, headers={**auth(token), "content-type": "application/json"}
    )
    payload: dict[str, Any] = await response.json()
    assert response.status < 500, (body[:200], payload)
    jsonschema.validate(payload, response_schema(path, "post", response.status))
    return response.status, payload


async def test_fuzzed_clicks_never_fail_and_only_valid_events_are_published(
    ingest: Client, settings: Settings
) -> None:
    bodies = [orjson.dumps(v) for v in examples(json_values | mutated_clicks())]
    bodies += examples(raw_bodies)
    accepted = 0
    for body in bodies:
        status, payload = await post_and_check(ingest, "/v1/clicks", PUBLISH, body)
        if status == 202:
            accepted += payload["accepted"]

    published = await read_records(
        settings.kafka_bootstrap, settings.topic_prefix + "clicks", accepted + 1, timeout_s=5
    )
    assert len(published) == accepted
    for record in published:
        validate_click(orjson.loads(record.value), now=datetime.now(UTC))


async def test_fuzzed_endpoint_bodies_never_fail(ingest: Client) -> None:
    endpoint_bodies = st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"url": st.text() | st.just("https://hooks.example.com/x")},
            optional={
                "filters": json_values,
                "rate_limit_per_s": json_values,
                "enabled": json_values,
                "description": st.text(),
                "secret": st.text(),
            },
        ),
    )
    bodies = [orjson.dumps(v) for v in examples(endpoint_bodies)] + examples(raw_bodies)
    for body in bodies:
        await post_and_check(ingest, "/v1/endpoints", ACCOUNT_A, body)


async def test_openapi_document_is_served(ingest: Client) -> None:
    response = await ingest.get("/openapi.json")
    document = await response.json()

    assert response.status == 200
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) >= {
        "/v1/clicks",
        "/v1/endpoints",
        "/v1/endpoints/{endpoint_id}",
        "/v1/endpoints/{endpoint_id}/rotate-secret",
        "/v1/endpoints/{endpoint_id}/replay",
    }
