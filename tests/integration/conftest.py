"""In-process services wired to the real broker, each test on its own topic prefix."""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.ingest.app import create_app
from services.ingest.delivery_log.log import DeliveryLog
from shared.kafka.service_base import ServiceBase, service_base
from shared.model.topics import Topics
from shared.ops.settings import Settings, load_settings
from tests.support.attempts import KeyedProducer
from tests.support.postgres import PostgresServer, running_postgres

PUBLISH = "tok-publish"
ACCOUNT_A = "tok-account-a"
ACCOUNT_B = "tok-account-b"
ADMIN = "tok-admin"

AiohttpClient = Callable[..., Awaitable[TestClient[Any, Any]]]


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def make_settings(bootstrap: str, prefix: str, **overrides: Any) -> Settings:
    base = load_settings(
        {
            "CLICKHOOK_KAFKA_BOOTSTRAP": bootstrap,
            "CLICKHOOK_TOPIC_PREFIX": prefix,
            "CLICKHOOK_API_KEYS": (
                f"{PUBLISH}:publish,{ACCOUNT_A}:account:acc_a,"
                f"{ACCOUNT_B}:account:acc_b,{ADMIN}:admin"
            ),
            "CLICKHOOK_ALLOWED_CIDRS": "127.0.0.0/8",
            "CLICKHOOK_ALLOW_HTTP": "true",
            "CLICKHOOK_TOPIC_PARTITIONS": "3",
            "CLICKHOOK_PORTAL_KEY": secrets.token_hex(32),
        }
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture(name="settings")
def fixture_settings(kafka_bootstrap: str, prefix: str) -> Settings:
    return make_settings(kafka_bootstrap, prefix)


@pytest.fixture(name="producer")
async def fixture_producer(kafka_bootstrap: str) -> AsyncIterator[KeyedProducer]:
    """Records keyed and placed the way the services write them (attempts, dead letters)."""
    async with KeyedProducer(kafka_bootstrap) as producer:
        yield producer


@pytest.fixture(name="topics")
def fixture_topics(settings: Settings) -> Topics:
    return Topics(settings.topic_prefix)


@pytest.fixture(name="base")
async def fixture_base(settings: Settings) -> AsyncIterator[ServiceBase]:
    async with service_base(settings) as base:
        await base.endpoints.loaded.wait()
        yield base


@contextlib.asynccontextmanager
async def serving(
    base: ServiceBase, *, delivery_log: DeliveryLog | None = None
) -> AsyncIterator[TestClient[Any, Any]]:
    """The ingest app on ``base`` (``delivery_log``: as ``create_app``), closed (its cleanup
    contexts run: replays cancelled, the delivery log stopped) while ``base`` still runs, as
    ``services.ingest`` shuts down. Not through the aiohttp_client fixture: it closes its
    clients in its own teardown, after that of a base set up after it, whose producer is then
    stopped under the app's cleanup."""
    async with TestClient(TestServer(create_app(base, delivery_log=delivery_log))) as client:
        yield client


@pytest.fixture(name="ingest")
async def fixture_ingest(base: ServiceBase) -> AsyncIterator[TestClient[Any, Any]]:
    async with serving(base) as client:
        yield client


@pytest.fixture(name="replica_base")
async def fixture_replica_base(settings: Settings, base: ServiceBase) -> AsyncIterator[ServiceBase]:
    """A second ingest instance on the same topics, as the prod overlay runs several."""
    async with service_base(settings) as replica:
        await replica.endpoints.loaded.wait()
        yield replica


@pytest.fixture(name="replica")
async def fixture_replica(replica_base: ServiceBase) -> AsyncIterator[TestClient[Any, Any]]:
    async with serving(replica_base) as client:
        yield client


@pytest.fixture(name="postgres", scope="session")
def fixture_postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL for the session (started only when a test asks for it)."""
    with running_postgres() as server:
        yield server


@pytest.fixture(name="delivery_log_url", params=["sqlite", "postgresql"])
def fixture_delivery_log_url(request: pytest.FixtureRequest) -> str:
    """The delivery log's store, once each: the embedded SQLite index (empty URL) and
    PostgreSQL (a schema of this test's own)."""
    if request.param == "sqlite":
        return ""
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_schema()


async def assert_only_the_log_is_degraded(ingest: TestClient[Any, Any], endpoint_id: str) -> None:
    """The log's routes answer 503 with Retry-After; what does not read the log (click intake,
    the endpoint API, readiness) goes on answering, the endpoint shown without ``delivery``."""
    answer = await ingest.get(f"/v1/endpoints/{endpoint_id}/stats", headers=auth(ACCOUNT_A))
    assert answer.status == 503
    assert int(answer.headers["retry-after"]) >= 1
    assert (await answer.json())["error"]["code"] == "delivery_log_unavailable"
    click = {"type": "link.clicked", "occurred_at": "2026-11-27T11:00:00Z",
             "account_id": "acc_a", "link": {"id": "lnk_1"}}  # fmt: skip
    published = await ingest.post("/v1/clicks", json=click, headers=auth(PUBLISH))
    assert published.status == 202, await published.text()
    another = await ingest.post(
        "/v1/endpoints", json={"url": "http://127.0.0.1:9/other"}, headers=auth(ACCOUNT_A)
    )
    assert another.status == 201
    shown = await ingest.get(f"/v1/endpoints/{endpoint_id}", headers=auth(ACCOUNT_A))
    assert shown.status == 200
    assert "delivery" not in await shown.json()
    assert (await ingest.get("/readyz")).status == 200
