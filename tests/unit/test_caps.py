"""Shares of the endpoint caps: rate slots and concurrency parts (shared/model/caps.py)."""

from __future__ import annotations

import zlib

from hypothesis import given
from hypothesis import strategies as st

from shared.model.caps import (
    MAX_SLOT_WAIT_S,
    Share,
    SlotReservations,
    endpoint_offset,
    missed_slot,
    slot_time_s,
)

PARTITIONS = 60


def round_robin(processes: int, partitions: int = PARTITIONS) -> list[Share]:
    """Disjoint shares covering every partition, as the group's round-robin assignor makes."""
    return [Share.of(set(range(n, partitions, processes)), partitions) for n in range(processes)]


@st.composite
def disjoint_shares(draw: st.DrawFn) -> list[Share]:
    """Every partition to one of 1..8 processes, in any pattern."""
    processes = draw(st.integers(1, 8))
    owners = draw(st.lists(st.integers(0, processes - 1), min_size=PARTITIONS, max_size=PARTITIONS))
    return [
        Share.of({p for p, owner in enumerate(owners) if owner == n}, PARTITIONS)
        for n in range(processes)
    ]


def test_the_endpoint_offset_is_a_crc32_the_same_in_every_process() -> None:
    assert endpoint_offset("ep_1") == zlib.crc32(b"ep_1")


@given(disjoint_shares(), st.integers(0, 10**9), st.integers(0, 2**32))
def test_every_slot_belongs_to_exactly_one_process(
    shares: list[Share], slot: int, offset: int
) -> None:
    assert sum(share.owns_slot(slot, offset) for share in shares) == 1


@given(disjoint_shares(), st.integers(0, 10**9), st.integers(0, 2**32))
def test_next_own_slot_is_the_first_owned_at_or_after(
    shares: list[Share], first: int, offset: int
) -> None:
    for share in shares:
        slot = share.next_own_slot(first, offset)
        if not share.held:
            assert slot is None
            continue
        assert slot is not None
        assert first <= slot < first + PARTITIONS
        assert share.owns_slot(slot, offset)
        assert not any(share.owns_slot(s, offset) for s in range(first, slot))


@given(
    disjoint_shares(),
    st.sampled_from([0.5, 1.0, 2.0, 10.0, 100.0]),
    st.lists(st.tuples(st.integers(0, 7), st.floats(0.0, 20.0)), min_size=1, max_size=200),
)
def test_the_deployment_sends_at_most_one_request_per_slot_interval(
    shares: list[Share], rate_per_s: float, requests: list[tuple[int, float]]
) -> None:
    """Processes reserving independently, at any times: the slots they send in are distinct,
    so sends are at least 1 / rate apart and any one-second window holds at most rate + 1."""
    offset = endpoint_offset("ep_1")
    reservations = [SlotReservations(rate_per_s, offset) for _ in shares]
    sent: list[int] = []
    base_s = 1_700_000_000.0
    for process, at_s in sorted(requests, key=lambda r: r[1]):
        n = process % len(shares)
        slot = reservations[n].reserve(shares[n], base_s + at_s, max_wait_s=1.0)
        if slot is not None:
            assert shares[n].owns_slot(slot, offset)
            assert slot_time_s(slot, rate_per_s) >= base_s + at_s - 1e-6
            sent.append(slot)
    assert len(sent) == len(set(sent))
    times = sorted(slot_time_s(slot, rate_per_s) for slot in sent)
    for start in range(len(times)):
        in_window = [t for t in times[start:] if t <= times[start] + 1.0]
        assert len(in_window) <= rate_per_s + 1


@given(disjoint_shares(), st.integers(1, 100))
def test_concurrency_parts_sum_to_at_most_the_cap_while_each_gets_one(
    shares: list[Share], max_in_flight: int
) -> None:
    parts = [share.concurrency(max_in_flight) for share in shares]
    holders = [part for share, part in zip(shares, parts, strict=True) if share.held]
    assert all(part >= 1 for part in holders)
    if all(max_in_flight * len(s.held) // PARTITIONS >= 1 for s in shares if s.held):
        assert sum(parts) <= max_in_flight


def test_the_cap_holds_exactly_with_up_to_six_even_processes_at_ten() -> None:
    for processes in range(1, 7):
        assert sum(share.concurrency(10) for share in round_robin(processes)) <= 10


def test_a_process_without_partitions_gets_no_part() -> None:
    nothing = Share.of(set(), PARTITIONS)

    assert nothing.concurrency(10) == 0
    assert nothing.next_own_slot(5, 0) is None
    assert SlotReservations(10.0, 0).reserve(nothing, 100.0, 1.0) is None


@given(disjoint_shares(), st.floats(0.01, 1000.0), st.floats(0.0, 60.0))
def test_the_slot_wait_covers_two_own_slots_and_is_bounded(
    shares: list[Share], rate_per_s: float, max_wait_s: float
) -> None:
    for share in shares:
        if not share.held:
            continue
        allowed_s = share.slot_wait_allowed_s(rate_per_s, max_wait_s)
        own_interval_s = 1 / (rate_per_s * share.fraction)
        assert allowed_s <= MAX_SLOT_WAIT_S
        assert allowed_s >= min(MAX_SLOT_WAIT_S, max_wait_s, 2 * own_interval_s)


def test_a_quarter_share_waits_for_every_fourth_slot() -> None:
    (first, *_) = round_robin(4)
    reservations = SlotReservations(10.0, offset=0)

    slots = [reservations.reserve(first, 100.0, max_wait_s=10.0) for _ in range(3)]

    assert slots == [1000, 1004, 1008]


def test_a_sender_woken_more_than_half_a_slot_late_missed_it() -> None:
    assert not missed_slot(1000, 10.0, 100.04)
    assert missed_slot(1000, 10.0, 100.06)
