"""The committable offset of one partition with many records in flight."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.model.watermark import (
    MAX_METADATA_CHARS,
    PartitionWatermark,
    decode_finished,
    encode_finished,
)


@pytest.fixture(name="watermark")
def fixture_watermark() -> PartitionWatermark:
    return PartitionWatermark()


def test_nothing_is_committable_before_any_record(watermark: PartitionWatermark) -> None:
    assert watermark.committable() is None
    assert watermark.in_flight == 0


def test_a_record_in_flight_holds_the_commit_at_its_offset(
    watermark: PartitionWatermark,
) -> None:
    watermark.start(5)
    assert watermark.committable() == 5
    assert watermark.in_flight == 1


def test_a_finished_record_commits_past_itself(watermark: PartitionWatermark) -> None:
    watermark.start(5)
    watermark.finish(5)
    assert watermark.committable() == 6
    assert watermark.in_flight == 0


def test_a_later_finish_does_not_pass_an_earlier_unfinished_record(
    watermark: PartitionWatermark,
) -> None:
    for offset in (5, 6, 7):
        watermark.start(offset)
    watermark.finish(6)
    watermark.finish(7)
    assert watermark.committable() == 5
    assert watermark.in_flight == 1


def test_finishing_the_lowest_record_jumps_over_finished_ones(
    watermark: PartitionWatermark,
) -> None:
    for offset in (5, 6, 7, 8):
        watermark.start(offset)
    watermark.finish(6)
    watermark.finish(7)
    watermark.finish(5)
    assert watermark.committable() == 8


def test_gaps_between_offsets_are_skipped(watermark: PartitionWatermark) -> None:
    """Compacted topics and transaction markers leave holes in the offsets."""
    watermark.start(10)
    watermark.start(14)
    watermark.finish(10)
    assert watermark.committable() == 14
    watermark.finish(14)
    assert watermark.committable() == 15


def test_finishing_an_unknown_offset_changes_nothing(watermark: PartitionWatermark) -> None:
    watermark.start(3)
    watermark.finish(99)
    assert watermark.committable() == 3
    assert watermark.in_flight == 1
    assert watermark.finished_above() == []


def test_finished_records_above_an_unfinished_one_are_listed_until_it_finishes(
    watermark: PartitionWatermark,
) -> None:
    for offset in (5, 6, 7, 8):
        watermark.start(offset)
    watermark.finish(8)
    watermark.finish(6)
    assert watermark.finished_above() == [6, 8]
    watermark.finish(5)
    assert (watermark.committable(), watermark.finished_above()) == (7, [8])
    watermark.finish(7)
    assert (watermark.committable(), watermark.finished_above()) == (9, [])


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=40),
    first=st.integers(min_value=0, max_value=10**9),
    data=st.data(),
)
def test_committable_never_passes_an_unfinished_offset(
    gaps: list[int], first: int, data: st.DataObject
) -> None:
    offsets: list[int] = []
    for gap in gaps:
        offsets.append((offsets[-1] if offsets else first - 1) + gap)
    watermark = PartitionWatermark()
    pending = list(offsets)
    in_flight: set[int] = set()
    while pending or in_flight:
        start_next = bool(pending) and (
            not in_flight or data.draw(st.booleans(), label="start next")
        )
        if start_next:
            offset = pending.pop(0)
            watermark.start(offset)
            in_flight.add(offset)
        else:
            offset = data.draw(st.sampled_from(sorted(in_flight)), label="finish")
            watermark.finish(offset)
            in_flight.discard(offset)
        committable = watermark.committable()
        assert committable is not None
        assert watermark.in_flight == len(in_flight)
        started = [o for o in offsets if o not in pending]
        finished = [o for o in started if o not in in_flight and o > committable]
        assert watermark.finished_above() == finished
        if in_flight:
            assert committable <= min(in_flight)
            assert committable == min(in_flight)
        else:
            assert committable == max(started) + 1
    assert watermark.committable() == offsets[-1] + 1


@given(
    committed=st.integers(min_value=0, max_value=10**12),
    above=st.sets(st.integers(min_value=1, max_value=5000), max_size=300),
)
def test_finished_offsets_survive_the_commit_metadata(committed: int, above: set[int]) -> None:
    finished = {committed + n for n in above}

    metadata = encode_finished(committed, sorted(finished))

    assert len(metadata) <= MAX_METADATA_CHARS
    assert decode_finished(committed, metadata) == finished


def test_too_many_finished_offsets_are_cut_never_invented() -> None:
    finished = set(range(101, 100_000, 2))

    metadata = encode_finished(100, sorted(finished))
    decoded = decode_finished(100, metadata)

    assert len(metadata) <= MAX_METADATA_CHARS
    highest = max(decoded)
    assert decoded < finished
    assert decoded == {o for o in finished if o <= highest}


@pytest.mark.parametrize("metadata", ["", "someone else's", "finished1:not*base64", "finished1"])
def test_metadata_that_is_not_ours_names_nothing(metadata: str) -> None:
    assert decode_finished(100, metadata) == set()
