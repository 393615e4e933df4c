"""Optimistic concurrency on endpoints: ETag and If-Match on the API, conditional writes in the
store, across two ingest replicas, on the real broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient

from shared.kafka.endpoint_store import EndpointStore
from shared.kafka.service_base import ServiceBase
from shared.model.messages import Endpoint
from shared.ops.settings import Settings
from tests.integration.conftest import ACCOUNT_A, auth

pytestmark = pytest.mark.kafka

Client = TestClient[Any, Any]
ROUNDS = 5


async def create_endpoint(client: Client, **fields: Any) -> tuple[dict[str, Any], str]:
    body = {"url": "https://hooks.example.com/in", **fields}
    response = await client.post("/v1/endpoints", json=body, headers=auth(ACCOUNT_A))
    created: dict[str, Any] = await response.json()
    assert response.status == 201, created
    return created, response.headers["etag"]


def path_of(endpoint: dict[str, Any]) -> str:
    return f"/v1/endpoints/{endpoint['id']}"


def if_match(tag: str) -> dict[str, str]:
    return {**auth(ACCOUNT_A), "if-match": tag}


async def describe(client: Client, endpoint: dict[str, Any], text: str, tag: str) -> int:
    response = await client.patch(
        path_of(endpoint), json={"description": text}, headers=if_match(tag)
    )
    return response.status


def stored(base: ServiceBase, endpoint_id: str) -> Endpoint:
    found = base.endpoints.table.get(endpoint_id)
    assert found is not None
    return found


def disable(current: Endpoint) -> Endpoint | None:
    """The change the deliverer makes on a 410: applied to the latest version, never a copy."""
    if not current.enabled:
        return None
    return msgspec.structs.replace(
        current, enabled=False, disabled_reason="endpoint answered 410 Gone"
    )


# --- ETag ---------------------------------------------------------------------------------------


async def test_created_and_read_endpoints_carry_their_version_as_etag(ingest: Client) -> None:
    created, created_tag = await create_endpoint(ingest)

    read = await ingest.get(path_of(created), headers=auth(ACCOUNT_A))

    assert created_tag == f'"{created["version"]}"'
    assert read.headers["etag"] == created_tag
    assert (await read.json())["version"] == created["version"]


async def test_every_write_changes_the_etag(ingest: Client) -> None:
    created, created_tag = await create_endpoint(ingest)

    patched = await ingest.patch(
        path_of(created), json={"description": "v2"}, headers=auth(ACCOUNT_A)
    )
    rotated = await ingest.post(f"{path_of(created)}/rotate-secret", headers=auth(ACCOUNT_A))
    read = await ingest.get(path_of(created), headers=auth(ACCOUNT_A))

    tags = [created_tag, patched.headers["etag"], rotated.headers["etag"]]
    assert len(set(tags)) == 3
    assert patched.headers["etag"] == f'"{(await patched.json())["version"]}"'
    assert read.headers["etag"] == rotated.headers["etag"]


async def test_listed_endpoints_show_their_versions(ingest: Client) -> None:
    created, _ = await create_endpoint(ingest)

    listed = await (await ingest.get("/v1/endpoints", headers=auth(ACCOUNT_A))).json()

    assert [e["version"] for e in listed["data"]] == [created["version"]]


# --- If-Match -----------------------------------------------------------------------------------


async def test_patch_with_the_current_etag_is_applied(ingest: Client) -> None:
    created, tag = await create_endpoint(ingest)

    status = await describe(ingest, created, "mine", tag)
    read = await (await ingest.get(path_of(created), headers=auth(ACCOUNT_A))).json()

    assert status == 200
    assert read["description"] == "mine"


async def test_patch_with_a_stale_etag_is_a_412_with_the_current_one(ingest: Client) -> None:
    created, stale = await create_endpoint(ingest)
    first = await ingest.patch(
        path_of(created), json={"description": "first"}, headers=auth(ACCOUNT_A)
    )

    refused = await ingest.patch(
        path_of(created), json={"description": "second"}, headers=if_match(stale)
    )
    error = (await refused.json())["error"]
    read = await (await ingest.get(path_of(created), headers=auth(ACCOUNT_A))).json()

    assert refused.status == 412
    assert error["code"] == "precondition_failed"
    assert refused.headers["etag"] == first.headers["etag"]
    assert read["description"] == "first"


@pytest.mark.parametrize("tag", ['W/"{v}"', '"nonsense"', '"999999"'])
async def test_a_weak_or_foreign_etag_never_matches(ingest: Client, tag: str) -> None:
    created, _ = await create_endpoint(ingest)

    status = await describe(ingest, created, "x", tag.format(v=created["version"]))

    assert status == 412


@pytest.mark.parametrize("tag", ["*", '"1", "{v}"', "{v}"])
async def test_a_star_a_list_or_an_unquoted_version_matches(ingest: Client, tag: str) -> None:
    created, _ = await create_endpoint(ingest)

    status = await describe(ingest, created, "x", tag.format(v=created["version"]))

    assert status == 200


async def test_delete_with_a_stale_etag_keeps_the_endpoint(ingest: Client) -> None:
    created, stale = await create_endpoint(ingest)
    await describe(ingest, created, "changed", stale)

    refused = await ingest.delete(path_of(created), headers=if_match(stale))
    read = await ingest.get(path_of(created), headers=auth(ACCOUNT_A))

    assert refused.status == 412
    assert read.status == 200


async def test_delete_with_the_current_etag_deletes(ingest: Client) -> None:
    created, tag = await create_endpoint(ingest)

    deleted = await ingest.delete(path_of(created), headers=if_match(tag))
    read = await ingest.get(path_of(created), headers=auth(ACCOUNT_A))

    assert deleted.status == 204
    assert read.status == 404


async def test_rotation_with_a_stale_etag_keeps_the_secret(
    ingest: Client, base: ServiceBase
) -> None:
    created, stale = await create_endpoint(ingest)
    await describe(ingest, created, "changed", stale)

    refused = await ingest.post(f"{path_of(created)}/rotate-secret", headers=if_match(stale))

    assert refused.status == 412
    assert stored(base, created["id"]).signing_secrets(datetime.now(UTC)) == [created["secret"]]


async def test_two_concurrent_patches_with_the_same_etag_one_wins_one_gets_412(
    ingest: Client,
) -> None:
    created, tag = await create_endpoint(ingest)

    statuses = await asyncio.gather(
        describe(ingest, created, "a", tag), describe(ingest, created, "b", tag)
    )

    assert sorted(statuses) == [200, 412]


async def test_two_replicas_patching_with_the_same_etag_one_wins_one_gets_412(
    ingest: Client, replica: Client
) -> None:
    created, tag = await create_endpoint(ingest)
    for round_ in range(ROUNDS):
        statuses = await asyncio.gather(
            describe(ingest, created, f"ingest {round_}", tag),
            describe(replica, created, f"replica {round_}", tag),
        )
        read = await ingest.get(path_of(created), headers=auth(ACCOUNT_A))
        winner = "ingest" if statuses[0] == 200 else "replica"

        assert sorted(statuses) == [200, 412], round_
        assert (await read.json())["description"] == f"{winner} {round_}"
        tag = read.headers["etag"]


# --- writes without If-Match --------------------------------------------------------------------


async def test_a_patch_without_if_match_is_applied_to_the_latest_version(
    ingest: Client, replica: Client, replica_base: ServiceBase
) -> None:
    created, _ = await create_endpoint(ingest)
    rotated = await (
        await ingest.post(f"{path_of(created)}/rotate-secret", headers=auth(ACCOUNT_A))
    ).json()

    # At once on the other replica, whose table may not have the rotation yet.
    patched = await replica.patch(
        path_of(created), json={"description": "later"}, headers=auth(ACCOUNT_A)
    )
    endpoint = stored(replica_base, created["id"])

    assert patched.status == 200
    assert endpoint.description == "later"
    assert endpoint.secrets[0].secret == rotated["secret"]


async def test_concurrent_writes_without_if_match_from_two_replicas_all_land(
    base: ServiceBase, replica_base: ServiceBase, ingest: Client
) -> None:
    created, _ = await create_endpoint(ingest)
    writes = 20

    def append_x(current: Endpoint) -> Endpoint:
        return msgspec.structs.replace(current, description=current.description + "x")

    stores = [base.endpoints, replica_base.endpoints] * (writes // 2)
    await asyncio.gather(*(store.update(created["id"], append_x) for store in stores))
    await asyncio.gather(base.endpoints.read_to_end(), replica_base.endpoints.read_to_end())

    assert stored(base, created["id"]).description == "x" * writes
    assert stored(base, created["id"]) == stored(replica_base, created["id"])


async def test_a_disable_racing_a_rotation_keeps_the_new_secret(
    ingest: Client, base: ServiceBase, replica_base: ServiceBase
) -> None:
    for round_ in range(ROUNDS):
        created, _ = await create_endpoint(ingest)
        # The rotation on the API; the disable from another service's store, as the
        # deliverer makes it when the endpoint answers 410.
        rotation, _ = await asyncio.gather(
            ingest.post(f"{path_of(created)}/rotate-secret", headers=auth(ACCOUNT_A)),
            replica_base.endpoints.update(created["id"], disable),
        )
        new_secret = (await rotation.json())["secret"]
        await base.endpoints.read_to_end()
        endpoint = stored(base, created["id"])

        assert rotation.status == 200, round_
        assert not endpoint.enabled, round_
        assert endpoint.secrets[0].secret == new_secret, round_


async def test_a_store_started_after_racing_writes_builds_the_same_table(
    settings: Settings, base: ServiceBase, replica_base: ServiceBase, ingest: Client
) -> None:
    """Losing writes were aborted: a reader that starts later sees only the winners, as the
    running readers do, versions included."""
    created, _ = await create_endpoint(ingest)
    for round_ in range(ROUNDS):
        await asyncio.gather(
            base.endpoints.update(created["id"], described_as(f"a{round_}")),
            replica_base.endpoints.update(created["id"], described_as(f"b{round_}")),
        )
    await base.endpoints.read_to_end()

    late = EndpointStore(settings)
    await late.start()
    follower = asyncio.create_task(late.follow())
    try:
        await late.loaded.wait()
        assert late.table.all() == base.endpoints.table.all()
    finally:
        follower.cancel()
        await late.stop()


def described_as(text: str) -> Callable[[Endpoint], Endpoint]:
    return lambda endpoint: msgspec.structs.replace(endpoint, description=text)


# --- unknown keys -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["tag", "link_id", "event_type"])
async def test_an_unknown_filter_key_on_create_is_a_422_naming_it(ingest: Client, key: str) -> None:
    response = await ingest.post(
        "/v1/endpoints",
        json={"url": "https://hooks.example.com/in", "filters": {key: ["spring"]}},
        headers=auth(ACCOUNT_A),
    )
    details = (await response.json())["error"]["details"]
    listed = await (await ingest.get("/v1/endpoints", headers=auth(ACCOUNT_A))).json()

    assert response.status == 422
    assert details == [{"field": f"filters.{key}", "problem": "unknown field"}]
    assert listed["data"] == []


async def test_an_unknown_filter_key_on_patch_is_a_422_and_changes_nothing(
    ingest: Client,
) -> None:
    created, tag = await create_endpoint(ingest, filters={"tags": ["spring"]})

    response = await ingest.patch(
        path_of(created), json={"filters": {"tag": ["autumn"]}}, headers=auth(ACCOUNT_A)
    )
    details = (await response.json())["error"]["details"]
    read = await ingest.get(path_of(created), headers=auth(ACCOUNT_A))

    assert response.status == 422
    assert details == [{"field": "filters.tag", "problem": "unknown field"}]
    assert read.headers["etag"] == tag
    assert (await read.json())["filters"] == {"tags": ["spring"]}
