"""Which versions an ``If-Match`` header allows (RFC 9110, strong comparison)."""

from __future__ import annotations

import msgspec
import pytest

from services.ingest.endpoints_api import etag, if_match_versions
from tests.support.endpoints import endpoint_to


@pytest.mark.parametrize("header", [None, "*", " * "])
def test_no_header_or_a_star_sets_no_condition(header: str | None) -> None:
    assert if_match_versions(header) is None


@pytest.mark.parametrize(
    ("header", "versions"),
    [
        ('"57"', {57}),
        ('"57", "58"', {57, 58}),
        ("57", {57}),  # a client that dropped the quotes
        ('W/"57"', set()),  # weak tags never match
        ('"abc"', set()),
        ('"-1"', set()),
        ("", set()),
        ('"57", W/"58", junk', {57}),
    ],
)
def test_tags_become_the_versions_they_name(header: str, versions: set[int]) -> None:
    assert if_match_versions(header) == frozenset(versions)


def test_an_etag_reads_back_as_its_version() -> None:
    endpoint = endpoint_to("https://hooks.example.com/in")
    endpoint = msgspec.structs.replace(endpoint, version=12)

    assert if_match_versions(etag(endpoint)) == frozenset({12})
