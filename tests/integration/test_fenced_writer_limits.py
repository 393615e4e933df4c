"""The fenced writer's two limits (shared/kafka/fenced.py), driven past them on the real broker:
a write fenced ``MAX_WRITE_ATTEMPTS`` times in a row gives up (the API answers 409 `conflict`,
nothing of it is visible to any reader), and more than ``MAX_BATCH_WRITES`` writes waiting at
once are committed in several transactions, each with its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiokafka import AIOKafkaProducer

from shared.kafka.fenced import MAX_BATCH_WRITES, MAX_WRITE_ATTEMPTS, FencedWriter
from shared.kafka.service_base import ServiceBase
from shared.model.messages import Endpoint, EndpointSecret
from shared.model.signing import generate_secret
from tests.integration.conftest import ACCOUNT_A, auth
from tests.integration.test_endpoint_versions import create_endpoint, path_of

pytestmark = pytest.mark.kafka

Client = TestClient[Any, Any]
# Past one transaction's limit, so the writes waiting at once take two.
PAST_ONE_BATCH = MAX_BATCH_WRITES + 20


class Rival:
    """Another writer that opens (and so fences ours) right after each time ours opened, as an
    instance whose writes keep winning would: ours never gets a commit through."""

    def __init__(self, writer: FencedWriter, bootstrap: str) -> None:
        self._writer = writer
        self._bootstrap = bootstrap
        self.fenced = 0

    def __enter__(self) -> Rival:
        self._open = self._writer._open_producer
        self._writer._open_producer = self._open_then_fenced  # type: ignore[method-assign]
        return self

    def __exit__(self, *_: object) -> None:
        del self._writer._open_producer  # the class's method again

    async def _open_then_fenced(self) -> AIOKafkaProducer:
        producer = await self._open()
        rival = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap, transactional_id=self._writer.writer_id
        )
        await rival.start()  # a new epoch of the same transactional id: ours is fenced
        await rival.stop()
        self.fenced += 1
        return producer


def new_endpoint(n: int) -> Endpoint:
    now = datetime.now(UTC)
    return Endpoint(
        id=f"ep_many{n:04}{now.timestamp():.0f}",
        account_id="acc_a",
        url="https://hooks.example.com/in",
        secrets=[EndpointSecret(generate_secret())],
        created_at=now,
        updated_at=now,
    )


@pytest.fixture(name="rival")
def fixture_rival(base: ServiceBase, kafka_bootstrap: str) -> Iterator[Rival]:
    with Rival(base.endpoints._writer, kafka_bootstrap) as rival:
        yield rival


async def test_a_patch_fenced_every_time_answers_409_and_nothing_of_it_is_visible(
    ingest: Client, base: ServiceBase, replica_base: ServiceBase, kafka_bootstrap: str
) -> None:
    endpoint, tag = await create_endpoint(ingest, description="before")
    path = path_of(endpoint)

    with Rival(base.endpoints._writer, kafka_bootstrap) as rival:
        answer = await ingest.patch(path, json={"description": "lost"}, headers=auth(ACCOUNT_A))
    body = await answer.json()

    assert answer.status == 409, body
    assert body["error"]["code"] == "conflict"
    assert f"won {MAX_WRITE_ATTEMPTS} times in a row" in body["error"]["message"]
    assert rival.fenced == MAX_WRITE_ATTEMPTS
    # Nothing half-written: neither the writing instance nor a reader of the topic (the other
    # replica, committed records only) holds the lost write.
    await replica_base.endpoints.read_to_end()
    for store in (base.endpoints, replica_base.endpoints):
        held = store.table.get(endpoint["id"])
        assert held is not None
        assert held.description == "before"
        assert f'"{held.version}"' == tag
    # Once the contention stops, the same request goes through.
    again = await ingest.patch(path, json={"description": "after"}, headers=auth(ACCOUNT_A))
    assert again.status == 200
    assert (await again.json())["description"] == "after"


async def test_a_create_fenced_every_time_answers_409_and_creates_nothing(
    ingest: Client, base: ServiceBase, replica_base: ServiceBase, rival: Rival
) -> None:
    """Fencing is per topic, not per key: a new id meets other writers' wins all the same."""
    answer = await ingest.post(
        "/v1/endpoints", json={"url": "https://hooks.example.com/in"}, headers=auth(ACCOUNT_A)
    )
    body = await answer.json()

    assert answer.status == 409, body
    assert body["error"]["code"] == "conflict"
    assert rival.fenced == MAX_WRITE_ATTEMPTS
    await replica_base.endpoints.read_to_end()
    assert base.endpoints.table.for_account("acc_a") == []
    assert replica_base.endpoints.table.for_account("acc_a") == []


async def test_more_writes_than_one_transaction_holds_each_get_their_answer_and_all_land(
    base: ServiceBase, replica_base: ServiceBase
) -> None:
    endpoints = [new_endpoint(n) for n in range(PAST_ONE_BATCH)]

    created = await asyncio.gather(*(base.endpoints.create(e) for e in endpoints))

    assert [e.id for e in created] == [e.id for e in endpoints]
    assert len({e.version for e in created}) == PAST_ONE_BATCH
    # More than one transaction: a commit marker takes an offset between two of them.
    versions = sorted(e.version for e in created)
    assert versions[-1] - versions[0] + 1 > PAST_ONE_BATCH
    await replica_base.endpoints.read_to_end()
    for endpoint in created:
        held = replica_base.endpoints.table.get(endpoint.id)
        assert held is not None
        assert held.version == endpoint.version
