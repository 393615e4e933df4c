"""Custom headers and metadata of an endpoint: the rules, how they are sent, masked, stored."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from shared.delivery.http_client import encode_request, parse_target
from shared.model.endpoint_extras import (
    MAX_HEADER_NAME_CHARS,
    MAX_HEADER_VALUE_BYTES,
    MAX_HEADERS,
    MAX_METADATA_BYTES,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_CHARS,
    extras_problems,
    header_problems,
    logged,
    metadata_problems,
    sendable,
)
from shared.model.errors import Problem
from shared.model.formats import build_request
from shared.model.messages import MASK, Endpoint, decode_endpoint, encode_endpoint
from tests.support.endpoints import endpoint_to

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def endpoint(**fields: object) -> Endpoint:
    return msgspec.structs.replace(endpoint_to("https://hooks.example.com/x"), **fields)


# --- headers ---------------------------------------------------------------------------------


def test_ordinary_headers_pass() -> None:
    headers = {"Authorization": "Bearer abc.def", "X-Tenant": "42", "X-Empty": ""}

    assert header_problems(headers) == []


@pytest.mark.parametrize(
    "name",
    [
        "webhook-id",
        "Webhook-Timestamp",
        "WEBHOOK-SIGNATURE",
        "X-Hub-Signature-256",
        "dub-signature",
        "svix-signature",
        "Content-Type",
        "content-encoding",
        "User-Agent",
        "Content-Length",
    ],
)
def test_a_header_clickhook_sets_is_refused_by_name(name: str) -> None:
    assert header_problems({name: "x"}) == [
        Problem(f"headers.{name}", "is set by clickhook on every request: it cannot be replaced")
    ]


@pytest.mark.parametrize(
    "name",
    ["Connection", "keep-alive", "Transfer-Encoding", "TE", "trailer", "Upgrade", "Host",
     "Proxy-Authorization", "proxy-connection"],
)  # fmt: skip
def test_a_hop_by_hop_header_is_refused_by_name(name: str) -> None:
    assert header_problems({name: "x"}) == [
        Problem(f"headers.{name}", "is a hop-by-hop header: it cannot be set")
    ]


@pytest.mark.parametrize("name", ["X Tenant", "X:Tenant", "X-Ténant", "", "X-Tenant\r\n", "(x)"])
def test_a_name_that_is_not_an_http_token_is_refused(name: str) -> None:
    [problem] = header_problems({name: "x"})

    assert problem.field == f"headers.{name}"
    assert "HTTP token" in problem.problem


@pytest.mark.parametrize(
    "value",
    ["a\r\nInjected: 1", "a\nb", "nul\x00", "bell\x07", "café", "emoji 🌸", " lead", "trail\t"],
)
def test_a_value_that_is_not_a_plain_field_value_is_refused(value: str) -> None:
    [problem] = header_problems({"X-Tenant": value})

    assert problem.field == "headers.X-Tenant"
    assert "visible ASCII" in problem.problem


def test_a_value_that_is_not_a_string_is_named() -> None:
    assert header_problems({"X-A": 1}) == [Problem("headers.X-A", "the value must be a string")]
    assert metadata_problems({"k": None}) == [Problem("metadata.k", "the value must be a string")]


def test_inner_spaces_and_tabs_are_part_of_a_value() -> None:
    assert header_problems({"X-Tenant": "a b\tc"}) == []


def test_limits_are_named() -> None:
    too_many = {f"X-H{i}": "v" for i in range(MAX_HEADERS + 1)}
    long_name = "X" * (MAX_HEADER_NAME_CHARS + 1)

    assert header_problems(too_many) == [Problem("headers", "has 21 headers: at most 20")]
    assert header_problems({long_name: "v"}) == [
        Problem(f"headers.{long_name[:64]}", "the name is longer than 64 characters")
    ]
    assert header_problems({"X-Long": "v" * (MAX_HEADER_VALUE_BYTES + 1)}) == [
        Problem("headers.X-Long", "the value is longer than 1024 bytes")
    ]
    assert header_problems({"X-Max": "v" * MAX_HEADER_VALUE_BYTES}) == []


def test_a_name_given_twice_in_other_cases_is_refused() -> None:
    assert header_problems({"X-Tenant": "a", "x-tenant": "b"}) == [
        Problem("headers.x-tenant", "is given twice (header names are case-insensitive)")
    ]


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.text(st.characters(codec="latin-1"), max_size=8),
        st.text(st.characters(codec="utf-8"), max_size=8),
        max_size=4,
    )
)
def test_headers_that_pass_can_always_be_put_on_the_wire(headers: dict[str, str]) -> None:
    if header_problems(headers):
        return
    encode_request(parse_target("https://hooks.example.com/x"), headers, b"{}")


# --- metadata --------------------------------------------------------------------------------


def test_metadata_is_free_text_within_its_limits() -> None:
    assert metadata_problems({"campaign": "Frühling 🌸", "owner": "", "ä b": "\n"}) == []


def test_metadata_limits_are_named() -> None:
    too_many = {f"k{i}": "" for i in range(MAX_METADATA_KEYS + 1)}
    too_big = {f"k{i}": "v" * MAX_METADATA_VALUE_CHARS for i in range(17)}

    assert metadata_problems(too_many) == [Problem("metadata", "has 51 keys: at most 50")]
    assert metadata_problems({"k" * 65: ""}) == [
        Problem(f"metadata.{'k' * 64}", "the key is longer than 64 characters")
    ]
    assert metadata_problems({"k": "v" * 513}) == [
        Problem("metadata.k", "the value is longer than 512 characters")
    ]
    assert metadata_problems({"": "v"}) == [Problem("metadata", "a key is empty")]
    [problem] = metadata_problems(too_big)
    assert problem.field == "metadata"
    assert problem.problem.endswith(f"at most {MAX_METADATA_BYTES}")


def test_a_body_is_checked_only_where_headers_and_metadata_are_objects() -> None:
    assert extras_problems({"headers": "nope", "metadata": ["x"]}) == []
    assert [p.field for p in extras_problems({"headers": {"Host": "x"}, "metadata": {"": ""}})] == [
        "headers.Host",
        "metadata",
    ]


# --- stored, sent, shown, logged -------------------------------------------------------------


def test_a_record_written_before_headers_and_metadata_still_decodes() -> None:
    old = msgspec.json.decode(encode_endpoint(endpoint()))
    del old["headers"], old["metadata"]

    decoded = decode_endpoint(msgspec.json.encode(old))

    assert (decoded.headers, decoded.metadata) == ({}, {})


def test_headers_and_metadata_round_trip_through_the_record() -> None:
    stored = endpoint(headers={"Authorization": "Bearer t"}, metadata={"team": "growth"})

    assert decode_endpoint(encode_endpoint(stored)) == stored


def test_answers_show_header_names_masked_and_metadata_as_given() -> None:
    shown = endpoint(headers={"Authorization": "Bearer t"}, metadata={"team": "growth"})
    view = shown.public_view()

    assert view["headers"] == {"Authorization": MASK}
    assert view["metadata"] == {"team": "growth"}
    assert "Bearer t" not in msgspec.json.encode(view).decode()


def test_a_delivery_carries_the_custom_headers_and_its_signature_still_verifies() -> None:
    target = endpoint(headers={"Authorization": "Bearer t", "X-Tenant": "42"})

    body, headers = build_request(
        target, {"type": "link.clicked"}, webhook_id="msg_1", timestamp_s=int(time.time()), now=NOW
    )

    assert (headers["Authorization"], headers["X-Tenant"]) == ("Bearer t", "42")
    Webhook(target.secrets[0].secret).verify(body, headers)


def test_a_stored_reserved_header_never_replaces_a_signature_header() -> None:
    target = endpoint(headers={"Webhook-Signature": "v1,forged", "Connection": "close", "X-A": "1"})

    _, headers = build_request(
        target, {"type": "link.clicked"}, webhook_id="msg_1", timestamp_s=1, now=NOW
    )

    assert sendable(target.headers) == {"X-A": "1"}
    assert "Webhook-Signature" not in headers
    assert "Connection" not in headers
    assert headers["webhook-signature"].startswith("v1,")


def test_the_delivery_log_keeps_custom_header_values_masked() -> None:
    sent = {"Authorization": "Bearer t", "webhook-id": "msg_1"}

    assert logged(sent, {"Authorization": "Bearer t"}) == {
        "Authorization": MASK,
        "webhook-id": "msg_1",
    }
