"""Endpoint records as ``webhook.endpoints`` stores them: no version inside, tolerant reading."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import orjson

from shared.model.messages import (
    NO_VERSION,
    Endpoint,
    EndpointFilters,
    EndpointSecret,
    decode_endpoint,
    encode_endpoint,
)

AT = datetime(2025, 1, 1, tzinfo=UTC)


def _endpoint(version: int = NO_VERSION) -> Endpoint:
    return Endpoint(
        id="ep_1",
        account_id="acc_1",
        url="https://hooks.example.com/in",
        filters=EndpointFilters(tags=["spring"]),
        secrets=[EndpointSecret("whsec_AAAA")],
        created_at=AT,
        updated_at=AT,
        version=version,
    )


def test_a_record_does_not_store_the_version_it_was_read_at() -> None:
    stored = orjson.loads(encode_endpoint(_endpoint(version=41)))

    assert "version" not in stored


def test_a_record_decodes_to_the_endpoint_without_a_version() -> None:
    assert decode_endpoint(encode_endpoint(_endpoint(version=41))) == _endpoint()


def test_a_record_from_a_newer_writer_with_fields_unknown_here_still_decodes() -> None:
    record = orjson.loads(encode_endpoint(_endpoint()))
    record["added_later"] = {"any": "thing"}
    record["filters"]["countries"] = ["JP"]

    decoded = decode_endpoint(orjson.dumps(record))

    assert decoded == _endpoint()


def test_the_public_view_shows_the_version() -> None:
    assert _endpoint(version=7).public_view()["version"] == 7


def test_an_endpoint_read_back_keeps_everything_but_its_version() -> None:
    endpoint = _endpoint(version=3)
    read = decode_endpoint(encode_endpoint(endpoint))

    assert msgspec.structs.replace(read, version=3) == endpoint
