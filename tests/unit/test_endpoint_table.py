"""The in-memory view of the compacted endpoints topic."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
import pytest

from shared.model.endpoint_table import EndpointTable
from shared.model.messages import (
    Endpoint,
    EndpointFilters,
    EndpointSecret,
    decode_endpoint,
    encode_endpoint,
)
from shared.model.signing import generate_secret

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


def test_records_through_is_past_the_newest_record_applied_or_ignored(
    table: EndpointTable,
) -> None:
    """What a click's ``clickhook-endpoints-at`` stamp says: every record before it is read,
    tombstones and records a newer one made moot included."""
    assert table.records_through == 0
    table.apply("ep_1", _endpoint("ep_1"), 4)
    table.apply("ep_2", None, 7)
    assert table.records_through == 8
    table.apply("ep_1", _endpoint("ep_1"), 2)  # older than what is held: ignored
    assert table.records_through == 8


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


def test_a_record_older_than_a_recreation_is_ignored(table: EndpointTable) -> None:
    table.apply("ep_1", _endpoint(), offset=1)
    table.apply("ep_1", None, offset=2)
    recreated = _endpoint(url="https://hooks.example.com/again")
    assert table.apply("ep_1", recreated, offset=3) is True
    assert table.apply("ep_1", None, offset=2) is False
    assert table.apply("ep_1", _endpoint(), offset=1) is False
    assert table.get("ep_1") == _at(recreated, 3)


# --- held in fewer bytes, read the same --------------------------------------------------------

LATER = datetime(2025, 6, 1, tzinfo=UTC)


def _full(endpoint_id: str = "ep_1") -> Endpoint:
    """An endpoint with every optional field set."""
    return msgspec.structs.replace(
        _endpoint(endpoint_id),
        filters=EndpointFilters(link_ids=["lnk_1", "lnk_2"], tags=["t"]),
        signature_styles=["github"],
        headers={"authorization": "Bearer x"},
        metadata={"shortener_id": "42"},
        secrets=[EndpointSecret("whsec_AAAA"), EndpointSecret("whsec_BBBB", expires_at=LATER)],
        format="template",
        template='{"k": {{ link.key | json }}}',
        updated_at=LATER,
    )


def _decoded(endpoint: Endpoint) -> Endpoint:
    """As the follower reads it from the topic."""
    return decode_endpoint(encode_endpoint(endpoint))


@pytest.mark.parametrize("make", [_endpoint, _full], ids=["bare", "full"])
def test_a_held_endpoint_reads_writes_and_shows_as_the_record(
    table: EndpointTable, make: Callable[[str], Endpoint]
) -> None:
    record = _decoded(make("ep_1"))
    table.apply("ep_1", record, offset=4)
    held = table.get("ep_1")
    assert held is not None
    assert held == _at(record, 4)
    assert encode_endpoint(held) == encode_endpoint(record)
    assert held.public_view() == _at(record, 4).public_view()
    assert msgspec.to_builtins(held) == msgspec.to_builtins(_at(record, 4))


def test_what_endpoints_share_refuses_every_change(table: EndpointTable) -> None:
    for n in (1, 2):
        table.apply(f"ep_{n}", _decoded(_endpoint(f"ep_{n}")), offset=n)
    first, second = table.get("ep_1"), table.get("ep_2")
    assert first is not None
    assert second is not None
    assert first.headers is second.headers
    assert first.signature_styles is second.signature_styles
    with pytest.raises(TypeError):
        first.headers["authorization"] = "Bearer x"
    with pytest.raises(TypeError):
        first.metadata.update({"k": "v"})
    with pytest.raises(TypeError):
        first.signature_styles.append("github")
    assert second.headers == {}
    assert second.metadata == {}
    assert second.signature_styles == []


def test_an_endpoint_with_its_own_values_keeps_them(table: EndpointTable) -> None:
    table.apply("ep_1", _decoded(_full()), offset=1)
    held = table.get("ep_1")
    assert held is not None
    held.headers["x-more"] = "1"  # its own dict, as decoded: nobody else's changes
    assert held.updated_at == LATER
    assert held.created_at == AT


SCALE_ENDPOINTS = 10_000
# The scale bench's endpoints (tests/bench/scale.py): one link filter, one secret. Decoded as
# they are, 1,180 bytes each; held, about 860 (docs/performance-history.md, issue 26 follow-up).
HELD_BYTES_MAX = 950


def test_a_table_holds_an_endpoint_in_under_950_bytes(table: EndpointTable) -> None:
    records = [
        encode_endpoint(
            msgspec.structs.replace(
                _endpoint(f"ep_{n // 100}_{n % 100}", account_id=f"acc_{n // 100}"),
                url=f"http://127.0.0.1:9/ok/big/{n // 100}-{n % 100}",
                filters=EndpointFilters(link_ids=[f"lnk_{n % 100}"]),
                secrets=[EndpointSecret(generate_secret())],
            )
        )
        for n in range(SCALE_ENDPOINTS)
    ]
    gc.collect()
    tracemalloc.start()
    try:
        for offset, record in enumerate(records):
            endpoint = decode_endpoint(record)
            table.apply(endpoint.id, endpoint, offset)
        gc.collect()
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held / SCALE_ENDPOINTS < HELD_BYTES_MAX
