"""The in-memory view of the compacted endpoints topic."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from shared.model.endpoint_table import EndpointTable
from shared.model.messages import Endpoint, EndpointSecret

AT = datetime(2025, 1, 1, tzinfo=UTC)


def _endpoint(
    endpoint_id: str = "ep_1",
    *,
    account_id: str = "acc_1",
    url: str = "https://hooks.example.com/in",
    enabled: bool = True,
) -> Endpoint:
    return Endpoint(
        id=endpoint_id,
        account_id=account_id,
        url=url,
        enabled=enabled,
        secrets=[EndpointSecret("whsec_AAAA")],
        created_at=AT,
        updated_at=AT,
    )


def _at(endpoint: Endpoint, offset: int) -> Endpoint:
    """The endpoint as the table holds it once the record at ``offset`` was applied."""
    return msgspec.structs.replace(endpoint, version=offset)


@pytest.fixture(name="table")
def fixture_table() -> EndpointTable:
    return EndpointTable()


def test_empty_table_holds_nothing(table: EndpointTable) -> None:
    assert table.get("ep_1") is None
    assert table.for_account("acc_1") == []
    assert table.all() == []
    assert table.counts() == (0, 0)


def test_apply_adds_an_endpoint(table: EndpointTable) -> None:
    endpoint = _endpoint()
    assert table.apply("ep_1", endpoint, offset=0) is True
    assert table.get("ep_1") == _at(endpoint, 0)
    assert table.for_account("acc_1") == [_at(endpoint, 0)]
    assert table.all() == [_at(endpoint, 0)]


def test_an_endpoints_version_is_the_offset_of_its_record(table: EndpointTable) -> None:
    table.apply("ep_1", _endpoint(), offset=3)
    table.apply("ep_1", _endpoint(url="https://hooks.example.com/v2"), offset=9)
    held = table.get("ep_1")
    assert held is not None
    assert held.version == 9


def test_apply_replaces_with_a_newer_record(table: EndpointTable) -> None:
    table.apply("ep_1", _endpoint(), offset=1)
    newer = _endpoint(url="https://hooks.example.com/v2")
    assert table.apply("ep_1", newer, offset=2) is True
    assert table.get("ep_1") == _at(newer, 2)
    assert table.for_account("acc_1") == [_at(newer, 2)]


@pytest.mark.parametrize("offset", [5, 4, 0])
def test_apply_ignores_an_equal_or_older_record(table: EndpointTable, offset: int) -> None:
    """Read-your-writes: a replayed older record must not undo a locally applied write."""
    current = _endpoint(url="https://hooks.example.com/current")
    table.apply("ep_1", current, offset=5)
    assert table.apply("ep_1", _endpoint(url="https://old.example.com/"), offset) is False
    assert table.get("ep_1") == _at(current, 5)


def test_a_tombstone_removes_the_endpoint(table: EndpointTable) -> None:
    table.apply("ep_1", _endpoint(), offset=1)
    assert table.apply("ep_1", None, offset=2) is True
    assert table.get("ep_1") is None
    assert table.for_account("acc_1") == []
    assert table.all() == []


def test_an_older_tombstone_is_ignored(table: EndpointTable) -> None:
    endpoint = _endpoint()
    table.apply("ep_1", endpoint, offset=7)
    assert table.apply("ep_1", None, offset=3) is False
    assert table.get("ep_1") == _at(endpoint, 7)


def test_a_record_older_than_a_tombstone_does_not_resurrect(table: EndpointTable) -> None:
    table.apply("ep_1", _endpoint(), offset=1)
    table.apply("ep_1", None, offset=5)
    assert table.apply("ep_1", _endpoint(), offset=4) is False
    assert table.get("ep_1") is None


def test_moving_an_endpoint_to_another_account_updates_both(table: EndpointTable) -> None:
    table.apply("ep_1", _endpoint(account_id="acc_1"), offset=1)
    moved = _endpoint(account_id="acc_2")
    table.apply("ep_1", moved, offset=2)
    assert table.for_account("acc_1") == []
    assert table.for_account("acc_2") == [_at(moved, 2)]


def test_for_account_lists_only_that_accounts_endpoints(table: EndpointTable) -> None:
    first = _endpoint("ep_1", account_id="acc_1")
    second = _endpoint("ep_2", account_id="acc_1")
    other = _endpoint("ep_3", account_id="acc_2")
    for offset, endpoint in enumerate((first, second, other)):
        table.apply(endpoint.id, endpoint, offset)
    assert table.for_account("acc_1") == [_at(first, 0), _at(second, 1)]
    assert table.for_account("acc_2") == [_at(other, 2)]
    assert len(table.all()) == 3


def test_offsets_are_tracked_per_endpoint(table: EndpointTable) -> None:
    table.apply("ep_1", _endpoint("ep_1"), offset=10)
    assert table.apply("ep_2", _endpoint("ep_2"), offset=3) is True


def test_counts_splits_enabled_and_disabled(table: EndpointTable) -> None:
    table.apply("ep_1", _endpoint("ep_1"), offset=1)
    table.apply("ep_2", _endpoint("ep_2", enabled=False), offset=2)
    table.apply("ep_3", _endpoint("ep_3"), offset=3)
    assert table.counts() == (2, 1)


def test_counts_follow_endpoints_disabled_enabled_and_deleted(table: EndpointTable) -> None:
    table.apply("ep_1", _endpoint("ep_1"), offset=1)
    table.apply("ep_2", _endpoint("ep_2"), offset=2)
    table.apply("ep_1", _endpoint("ep_1", enabled=False), offset=3)
    table.apply("ep_2", None, offset=4)
    table.apply("ep_2", _endpoint("ep_2"), offset=2)  # older: ignored
    assert table.counts() == (0, 1)
    table.apply("ep_1", _endpoint("ep_1"), offset=5)
    assert table.counts() == (1, 0)
