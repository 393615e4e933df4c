"""Endpoint writes committed in groups (shared/kafka/fenced.py): concurrent writes from two
ingest replicas share transactions, each keeps its own check and answer, none is lost; on the
real broker."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient

from shared.kafka.endpoint_store import VersionMismatch
from shared.kafka.service_base import ServiceBase
from shared.model.messages import Endpoint, EndpointSecret
from shared.model.signing import generate_secret
from tests.integration.conftest import ACCOUNT_A, auth
from tests.integration.test_endpoint_versions import create_endpoint, if_match, path_of

pytestmark = pytest.mark.kafka

Client = TestClient[Any, Any]
ENDPOINTS = 8
ROUNDS = 3
WORKERS_PER_REPLICA = 4
INCREMENTS_PER_WORKER = 3


def new_endpoint(n: int) -> Endpoint:
    now = datetime.now(UTC)
    return Endpoint(
        id=f"ep_batch{n:04}{now.timestamp():.0f}",
        account_id="acc_a",
        url="https://hooks.example.com/in",
        secrets=[EndpointSecret(generate_secret())],
        created_at=now,
        updated_at=now,
    )


def described(text: str) -> Any:
    return lambda current: msgspec.structs.replace(current, description=text)


def appended(letter: str) -> Any:
    return lambda current: msgspec.structs.replace(
        current, description=current.description + letter
    )


async def patch_description(client: Client, endpoint_id: str, text: str, tag: str) -> Any:
    return await client.patch(
        f"/v1/endpoints/{endpoint_id}", json={"description": text}, headers=if_match(tag)
    )


async def test_concurrent_creates_from_two_replicas_all_land_with_distinct_versions(
    ingest: Client, replica: Client, base: ServiceBase, replica_base: ServiceBase
) -> None:
    clients = [ingest, replica] * ENDPOINTS

    created = await asyncio.gather(*(create_endpoint(client) for client in clients))
    await asyncio.gather(base.endpoints.read_to_end(), replica_base.endpoints.read_to_end())

    ids = {endpoint["id"] for endpoint, _ in created}
    assert len(ids) == len(clients)
    for endpoint, tag in created:
        for store in (base.endpoints, replica_base.endpoints):
            held = store.table.get(endpoint["id"])
            assert held is not None
            assert f'"{held.version}"' == tag


async def test_patches_with_the_same_etag_from_two_replicas_one_wins_per_endpoint(
    ingest: Client, replica: Client
) -> None:
    """Many endpoints at once, so the patches share transactions; per endpoint and round one
    200 and one 412, the winner's text kept, versions strictly increasing."""
    endpoints = [await create_endpoint(ingest) for _ in range(ENDPOINTS)]
    tags = {endpoint["id"]: tag for endpoint, tag in endpoints}
    versions: dict[str, list[int]] = {i: [int(t.strip('"'))] for i, t in tags.items()}
    for round_ in range(ROUNDS):
        answers = await asyncio.gather(
            *(
                patch_description(client, endpoint_id, f"{name} {round_}", tags[endpoint_id])
                for endpoint_id in tags
                for client, name in ((ingest, "ingest"), (replica, "replica"))
            )
        )
        for n, endpoint_id in enumerate(tags):
            mine, theirs = answers[2 * n], answers[2 * n + 1]
            statuses = sorted([mine.status, theirs.status])
            winner = mine if mine.status == 200 else theirs
            loser = theirs if winner is mine else mine
            read = await ingest.get(path_of({"id": endpoint_id}), headers=auth(ACCOUNT_A))
            won_by = "ingest" if winner is mine else "replica"

            assert statuses == [200, 412], (round_, endpoint_id)
            assert loser.headers["etag"] == winner.headers["etag"]
            assert (await read.json())["description"] == f"{won_by} {round_}"
            tags[endpoint_id] = winner.headers["etag"]
            versions[endpoint_id].append(int(tags[endpoint_id].strip('"')))
    for endpoint_id, seen in versions.items():
        assert seen == sorted(set(seen)), endpoint_id


async def test_read_modify_write_loops_on_two_replicas_lose_no_update(
    ingest: Client, replica: Client
) -> None:
    """Each worker reads the endpoint, appends a letter with If-Match, and on a 412 reads
    again: every success is one letter in the end, and each success saw a newer version."""
    endpoint, _ = await create_endpoint(ingest)
    path = path_of(endpoint)
    committed: list[int] = []

    async def worker(client: Client) -> None:
        done = 0
        while done < INCREMENTS_PER_WORKER:
            read = await client.get(path, headers=auth(ACCOUNT_A))
            text = (await read.json())["description"]
            answer = await client.patch(
                path, json={"description": text + "x"}, headers=if_match(read.headers["etag"])
            )
            if answer.status == 200:
                committed.append(int(answer.headers["etag"].strip('"')))
                done += 1
            else:
                assert answer.status == 412

    clients = [ingest, replica] * WORKERS_PER_REPLICA
    await asyncio.gather(*(worker(client) for client in clients))
    final = await (await ingest.get(path, headers=auth(ACCOUNT_A))).json()

    writes = len(clients) * INCREMENTS_PER_WORKER
    assert final["description"] == "x" * writes
    assert len(set(committed)) == writes
    assert final["version"] == max(committed)


async def test_one_stale_if_match_in_a_batch_fails_alone_and_the_others_commit_together(
    base: ServiceBase,
) -> None:
    store = base.endpoints
    created = [await store.create(new_endpoint(n)) for n in range(ENDPOINTS)]
    stale = created[3]
    await store.update(stale.id, described("moved on"))
    # Handed over in one go: all wait for the same batch.
    results = await asyncio.gather(
        *(store.update(e.id, described("batched"), if_match={e.version}) for e in created),
        return_exceptions=True,
    )

    refused = [r for r in results if isinstance(r, BaseException)]
    written = [r for r in results if isinstance(r, Endpoint)]
    assert len(refused) == 1
    assert isinstance(refused[0], VersionMismatch)
    assert refused[0].current.id == stale.id
    assert len(written) == ENDPOINTS - 1
    assert all(e.description == "batched" for e in written)
    # One transaction: its records sit side by side on the topic's one partition, no
    # commit marker between them (a transaction each would leave a marker after each).
    offsets = sorted(e.version for e in written)
    assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))


async def test_a_writer_fenced_by_another_replica_reopens_and_sees_its_write(
    base: ServiceBase, replica_base: ServiceBase
) -> None:
    """The first replica's producer stays open after its write; the second one's write
    fences it; its next write reopens, reads the second's, and builds on it."""
    endpoint = await base.endpoints.create(new_endpoint(0))

    await base.endpoints.update(endpoint.id, appended("a"))
    await replica_base.endpoints.update(endpoint.id, appended("b"))
    after = await base.endpoints.update(endpoint.id, appended("c"))

    assert after is not None
    assert after.description == "abc"


async def test_a_second_write_of_one_key_waits_for_the_first_in_the_same_instance(
    base: ServiceBase,
) -> None:
    endpoint = await base.endpoints.create(new_endpoint(0))

    await asyncio.gather(*(base.endpoints.update(endpoint.id, appended("x")) for _ in range(6)))

    held = base.endpoints.table.get(endpoint.id)
    assert held is not None
    assert held.description == "x" * 6
