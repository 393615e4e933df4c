"""When held retry partitions fall due."""

from __future__ import annotations

import pytest

from services.retry.due import DueTimes, due_at_ms_from_headers
from shared.model.topics import HEADER_DUE_AT_MS


@pytest.fixture(name="due")
def fixture_due() -> DueTimes[str]:
    return DueTimes()


def test_due_at_is_read_from_its_header() -> None:
    headers = [("clickhook-source", b"dispatcher"), (HEADER_DUE_AT_MS, b"1735732800123")]
    assert due_at_ms_from_headers(headers) == 1_735_732_800_123


def test_due_at_is_none_without_the_header() -> None:
    assert due_at_ms_from_headers([("clickhook-source", b"dispatcher")]) is None


@pytest.mark.parametrize("value", [b"", b"soon", b"1.5e12", b"\xff"])
def test_due_at_is_none_for_a_malformed_value(value: bytes) -> None:
    assert due_at_ms_from_headers([(HEADER_DUE_AT_MS, value)]) is None


def test_due_at_is_none_for_a_null_header_value() -> None:
    headers: list[tuple[str, bytes | None]] = [(HEADER_DUE_AT_MS, None)]
    assert due_at_ms_from_headers(headers) is None


def test_due_at_uses_the_first_header() -> None:
    assert due_at_ms_from_headers([(HEADER_DUE_AT_MS, b"10"), (HEADER_DUE_AT_MS, b"20")]) == 10


def test_header_name_must_match_exactly() -> None:
    assert due_at_ms_from_headers([("Clickhook-Due-At-Ms", b"10")]) is None


def test_nothing_held_means_no_wakeup(due: DueTimes[str]) -> None:
    assert due.next_wakeup_s(1_000) is None
    assert due.release_due(1_000) == []
    assert due.held() == []


def test_release_due_returns_keys_whose_time_has_come(due: DueTimes[str]) -> None:
    due.hold("a", 1_000)
    due.hold("b", 2_000)
    due.hold("c", 1_500)
    assert due.release_due(1_500) == ["a", "c"]
    assert due.held() == ["b"]


def test_released_keys_are_forgotten(due: DueTimes[str]) -> None:
    due.hold("a", 1_000)
    assert due.release_due(1_000) == ["a"]
    assert due.release_due(5_000) == []


def test_holding_again_replaces_the_due_time(due: DueTimes[str]) -> None:
    due.hold("a", 1_000)
    due.hold("a", 3_000)
    assert due.release_due(2_000) == []
    assert due.next_wakeup_s(2_000) == 1.0


def test_forget_drops_keys_and_ignores_unknown_ones(due: DueTimes[str]) -> None:
    due.hold("a", 1_000)
    due.hold("b", 1_000)
    due.forget(["a", "zzz"])
    assert due.held() == ["b"]


def test_next_wakeup_is_the_earliest_due_time(due: DueTimes[str]) -> None:
    due.hold("a", 5_000)
    due.hold("b", 2_500)
    assert due.next_wakeup_s(1_000) == 1.5


def test_next_wakeup_is_never_negative(due: DueTimes[str]) -> None:
    due.hold("a", 1_000)
    assert due.next_wakeup_s(9_000) == 0.0


def test_keys_may_be_tuples() -> None:
    due: DueTimes[tuple[str, int]] = DueTimes()
    due.hold(("webhook.retry.5s", 0), 10)
    assert due.release_due(10) == [("webhook.retry.5s", 0)]
