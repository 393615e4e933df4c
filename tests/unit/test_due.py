"""A retry record's due time, from its header (the worker holds it until then:
tests/integration/test_partition_worker.py)."""

from __future__ import annotations

import pytest

from services.retry.due import due_at_ms_from_headers
from shared.model.topics import HEADER_DUE_AT_MS


def test_due_at_is_read_from_its_header() -> None:
    headers = [("clickhook-source", b"dispatcher"), (HEADER_DUE_AT_MS, b"1735732800123")]
    assert due_at_ms_from_headers(headers) == 1_735_732_800_123


def test_due_at_is_none_without_the_header() -> None:
    assert due_at_ms_from_headers([("clickhook-source", b"dispatcher")]) is None


@pytest.mark.parametrize(
    "value", [b"", b"soon", b"1.5e12", b"\xff", b"1" * 20, b"9" * 5000], ids=lambda v: v[:8]
)
def test_due_at_is_none_for_a_malformed_value(value: bytes) -> None:
    assert due_at_ms_from_headers([(HEADER_DUE_AT_MS, value)]) is None


def test_due_at_is_none_for_a_null_header_value() -> None:
    headers: list[tuple[str, bytes | None]] = [(HEADER_DUE_AT_MS, None)]
    assert due_at_ms_from_headers(headers) is None


def test_due_at_uses_the_first_header() -> None:
    assert due_at_ms_from_headers([(HEADER_DUE_AT_MS, b"10"), (HEADER_DUE_AT_MS, b"20")]) == 10


def test_header_name_must_match_exactly() -> None:
    assert due_at_ms_from_headers([("Clickhook-Due-At-Ms", b"10")]) is None
