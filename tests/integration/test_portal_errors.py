"""What the portal says when something goes wrong, against the real broker: each kind of error
provoked, and the page checked for plain words, never an exception's text or class name. Also
the last error's "recovered since" once the endpoint succeeds again."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiokafka.errors import KafkaTimeoutError

from services.ingest.delivery_log.api import DeliveryLogApi
from services.ingest.endpoints_api import EndpointApi
from shared.model.errors import DeliveryLogUnavailable
from shared.model.topics import Topics
from tests.integration.conftest import ACCOUNT_A, auth
from tests.integration.test_portal_access import create_endpoint, open_portal
from tests.support.attempts import KeyedProducer, attempt, eventually, now_ms, replay_job

pytestmark = pytest.mark.kafka

Client = TestClient[Any, Any]

# What must never reach a customer: Python's class names and tracebacks, msgspec's messages,
# our internal wording, and the details the provoked errors carry.
LEAKS = re.compile(
    r"[A-Z][A-Za-z]+(Error|Exception)\b|Traceback|Expected `|\$\.|ETag|If-Match|"
    r"internal detail|10\.0\.0\.5|disk full"
)
CONNECT_FAILURE = (
    "ClientConnectorError: Cannot connect to host 10.0.0.5:443 ssl:default [Connect call failed]"
)


@pytest.fixture(name="endpoint_id")
async def fixture_endpoint_id(ingest: Client) -> str:
    endpoint_id = await create_endpoint(ingest, ACCOUNT_A)
    await open_portal(ingest)
    return endpoint_id


async def plain_page(ingest: Client, method: str, path: str, status: int, **data: str) -> str:
    """The page a request gets, checked for plain words (``data``: a form, sent with the
    session's CSRF token)."""
    if method == "POST":
        data = {"csrf": await csrf_token(ingest), **data}
    response = await ingest.request(method, path, data=data or None)
    page = await response.text()
    assert response.status == status, page
    assert response.headers["content-type"].startswith("text/html")
    leaked = LEAKS.search(page)
    assert leaked is None, (leaked.group(), page)
    return html.unescape(page)


async def csrf_token(ingest: Client) -> str:
    page = await (await ingest.get("/portal/endpoints/new")).text()
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


async def version_shown(ingest: Client, endpoint_id: str) -> str:
    page = await (await ingest.get(f"/portal/endpoints/{endpoint_id}/edit")).text()
    found = re.search(r'name="version" value="([^"]+)"', page)
    assert found is not None
    return html.unescape(found.group(1))


async def change_elsewhere(ingest: Client, endpoint_id: str) -> None:
    response = await ingest.patch(
        f"/v1/endpoints/{endpoint_id}", json={"description": "changed"}, headers=auth(ACCOUNT_A)
    )
    assert response.status == 200


async def test_a_write_on_a_page_that_went_stale_says_reload(
    ingest: Client, endpoint_id: str
) -> None:
    version = await version_shown(ingest, endpoint_id)
    await change_elsewhere(ingest, endpoint_id)
    path = f"/portal/endpoints/{endpoint_id}"
    page = await plain_page(ingest, "POST", f"{path}/disable", 412, version=version)
    assert "changed since you opened the page; reload and try again" in page
    form = await plain_page(
        ingest, "POST", path, 422, version=version, url="http://127.0.0.1:9/x", format="standard"
    )
    assert "changed since you opened the page" in form


async def test_a_value_of_the_wrong_kind_says_what_to_enter(
    ingest: Client, endpoint_id: str
) -> None:
    page = await plain_page(
        ingest, "POST", "/portal/endpoints", 422, url="http://127.0.0.1:9/x", rate_limit_per_s="x"
    )
    assert "Rate limit: enter a number of requests per second" in page
    preview = f"/portal/endpoints/{endpoint_id}/preview"
    assert "Format: choose one of the listed formats." in await plain_page(
        ingest, "POST", preview, 200, format="nonsense"
    )


async def test_a_test_event_to_a_disabled_endpoint_says_enable_it(
    ingest: Client, endpoint_id: str
) -> None:
    response = await ingest.patch(
        f"/v1/endpoints/{endpoint_id}", json={"enabled": False}, headers=auth(ACCOUNT_A)
    )
    assert response.status == 200
    page = await plain_page(ingest, "POST", f"/portal/endpoints/{endpoint_id}/test", 409)
    assert "Enable the endpoint first" in page


@pytest.mark.parametrize(
    ("api", "operation", "failure", "method", "page", "status", "sentence"),
    [
        pytest.param(
            DeliveryLogApi, "endpoint_stats",
            DeliveryLogUnavailable("disk full at /var/lib/clickhook", retry_after_s=7),
            "GET", "", 503, "The delivery log is catching up; try again in a minute.",
            id="delivery log unavailable",
        ),
        pytest.param(
            DeliveryLogApi, "send_test_event",
            KafkaTimeoutError("internal detail: produce to 10.0.0.5 timed out"),
            "POST", "/test", 503, "nothing was changed",
            id="broker unavailable",
        ),
        pytest.param(
            EndpointApi, "rotate_endpoint_secret", RuntimeError("internal detail"),
            "POST", "/rotate-secret", 500, "Something went wrong on our side",
            id="unexpected",
        ),
    ],
)  # fmt: skip
async def test_a_failure_inside_is_a_plain_page(
    ingest: Client,
    endpoint_id: str,
    monkeypatch: pytest.MonkeyPatch,
    api: type[object],
    operation: str,
    failure: Exception,
    method: str,
    page: str,
    status: int,
    sentence: str,
) -> None:
    async def failing(*_: object) -> None:
        raise failure

    monkeypatch.setattr(api, operation, failing)
    shown = await plain_page(ingest, method, f"/portal/endpoints/{endpoint_id}{page}", status)
    assert sentence in shown


async def test_a_route_used_the_wrong_way_says_so(ingest: Client, endpoint_id: str) -> None:
    page = await plain_page(ingest, "GET", f"/portal/endpoints/{endpoint_id}/delete", 405)
    assert "cannot be used that way" in page


async def test_failed_deliveries_and_replays_are_told_by_what_they_mean(
    ingest: Client, endpoint_id: str, producer: KeyedProducer, topics: Topics
) -> None:
    failed = attempt(endpoint_id, "evt_1", outcome="connect_error", status=None,
                     error=CONNECT_FAILURE)  # fmt: skip
    await producer.send(topics.attempts, endpoint_id, [failed])
    job = replay_job(endpoint_id, partition=0, end_offset=0, state="failed",
                     error="KafkaConnectionError: internal detail")  # fmt: skip
    await producer.send(topics.replays, job.id, [job])
    path = f"/portal/endpoints/{endpoint_id}"

    async def shown() -> bool:
        log = await plain_page(ingest, "GET", f"{path}/log", 200)
        dead = await plain_page(ingest, "GET", f"{path}/dead-letters", 200)
        return "evt_1" in log and "Replay failed" in dead

    await eventually(shown)
    could_not_connect = "We could not connect to your endpoint"
    assert could_not_connect in await plain_page(ingest, "GET", path, 200)
    assert could_not_connect in await plain_page(ingest, "GET", "/portal/", 200)
    attempt_id = re.search(r"/attempts/(att_[\w-]+)", await plain_page(ingest, "GET", path, 200))
    assert attempt_id is not None
    detail = await plain_page(ingest, "GET", f"{path}/attempts/{attempt_id.group(1)}", 200)
    assert could_not_connect in detail
    dead = await plain_page(ingest, "GET", f"{path}/dead-letters", 200)
    assert "replay again to send the rest" in dead


async def test_the_last_error_reads_recovered_once_deliveries_succeed(
    ingest: Client, endpoint_id: str, producer: KeyedProducer, topics: Topics
) -> None:
    start = now_ms() - 60_000
    path = f"/portal/endpoints/{endpoint_id}"
    failing = attempt(endpoint_id, "evt_1", at_ms=start, outcome="http_5xx", status=503)
    await producer.send(topics.attempts, endpoint_id, [failing])
    await eventually(lambda: listed(ingest, path, "evt_1"))
    page = await plain_page(ingest, "GET", path, 200)
    assert '<p class="last-error">' in page
    assert "recovered" not in page

    succeeding = attempt(endpoint_id, "evt_2", at_ms=start + 5_000)
    await producer.send(topics.attempts, endpoint_id, [succeeding])
    await eventually(lambda: listed(ingest, path, "evt_2"))
    page = await plain_page(ingest, "GET", path, 200)
    assert '<p class="last-error recovered">' in page
    recovered = re.search(r"recovered since ([0-9-]+ [0-9:]+ UTC)", page)
    assert recovered is not None, page
    listing = await plain_page(ingest, "GET", "/portal/", 200)
    assert f"recovered since {recovered.group(1)}" in listing


async def listed(ingest: Client, path: str, event_id: str) -> bool:
    return event_id in await (await ingest.get(f"{path}/log")).text()
