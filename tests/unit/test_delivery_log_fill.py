"""The history fill's rules on their own (no broker): which offsets are left to read, how far
back the log is complete, and the state as the index keeps it."""

from __future__ import annotations

import bisect

from hypothesis import given
from hypothesis import strategies as st

from services.ingest.delivery_log.fill import (
    EVICTED_STREAM,
    HOUR_MS,
    FillState,
    Key,
    Window,
    budget_reached,
    complete_since_ms,
    evicted_through,
    first_state,
    loaded_state,
    newest_first_since,
    next_positions,
    next_state,
    next_window_ms,
    offsets_at,
    stored_positions,
)

A: Key = ("webhook.attempts", 0)
B: Key = ("webhook.attempts", 1)
NOW_MS = 1_800_000_000_000


def test_a_fresh_index_follows_from_the_newest_hour_and_fills_the_hour_before_first() -> None:
    since = newest_first_since(NOW_MS)
    state = first_state(since, heads={A: 900, B: 40}, window_starts={A: 700, B: 40})

    assert since == NOW_MS - HOUR_MS
    assert state.windows == {A: Window(700, 700, 900), B: Window(40, 40, 40)}
    assert state.left() == {A: Window(700, 700, 900)}
    assert complete_since_ms(state) == since


def test_a_partition_without_records_that_new_starts_at_its_end() -> None:
    assert offsets_at({A: None, B: 7}, ends={A: 12, B: 30}) == {A: 12, B: 7}


def test_reading_never_moves_past_the_window_or_back() -> None:
    state = first_state(NOW_MS, heads={A: 900}, window_starts={A: 700})

    assert state.advanced(A, 800).windows[A].next == 800
    assert state.advanced(A, 5000).windows[A].next == 900
    assert state.advanced(A, 800).advanced(A, 750).windows[A].next == 800


def test_a_window_read_in_full_makes_the_log_complete_an_hour_further_back() -> None:
    state = first_state(NOW_MS, heads={A: 900}, window_starts={A: 700}).advanced(A, 900)

    assert state.window_done
    assert complete_since_ms(state) == NOW_MS - HOUR_MS
    following = next_state(state, window_starts={A: 500}, beginnings={A: 0})
    assert following == FillState(NOW_MS - HOUR_MS, {A: Window(500, 500, 700)})
    assert next_window_ms(state) == NOW_MS - 2 * HOUR_MS


def test_the_fill_ends_when_a_window_started_at_the_beginning_of_every_partition() -> None:
    state = first_state(NOW_MS, heads={A: 900, B: 50}, window_starts={A: 100, B: 10})
    state = state.advanced(A, 900).advanced(B, 50)

    assert next_state(state, window_starts={A: 100, B: 10}, beginnings={A: 100, B: 10}) is None
    assert next_state(state, window_starts={A: 100, B: 0}, beginnings={A: 100, B: 0}) is not None
    assert complete_since_ms(None) is None


@given(
    times=st.lists(st.integers(0, 30 * HOUR_MS), max_size=200).map(sorted),
    started_ms=st.integers(HOUR_MS, 31 * HOUR_MS),
    retention=st.integers(0, 50),
)
def test_the_windows_cover_the_history_once_newest_first(
    times: list[int], started_ms: int, retention: int
) -> None:
    """Records at ``times`` (offsets 0…, the first ``retention`` of them gone): following
    starts at the newest hour and the fill reads every older offset exactly once, each
    window older than the one before."""
    beginning = min(retention, len(times))

    def looked_up(at_ms: int) -> dict[Key, int]:
        return {A: max(beginning, bisect.bisect_left(times, at_ms))}

    since = newest_first_since(started_ms)
    head = looked_up(since)[A]
    state: FillState | None = first_state(since, {A: head}, looked_up(since - HOUR_MS))
    read: list[int] = []
    previous_since = since + 1
    while state is not None:
        assert state.since_ms < previous_since
        previous_since = state.since_ms
        window = state.windows[A]
        assert all(times[o] < state.since_ms for o in range(window.start, window.end))
        read += range(window.next, window.end)
        state = next_state(
            state.advanced(A, window.end), looked_up(next_window_ms(state)), {A: beginning}
        )

    assert sorted(read) == list(range(beginning, head))


def test_the_state_is_kept_and_loaded_back_from_the_positions_table() -> None:
    state = first_state(NOW_MS, heads={A: 900, B: 40}, window_starts={A: 700, B: 20})
    state = state.advanced(A, 750)
    stored = dict(stored_positions(state))
    stored.update(next_positions([(B, 30)]))
    stored[A] = 1234  # the topic's own position beside it: not part of the fill

    assert loaded_state(stored) == state.advanced(B, 30)
    assert loaded_state({A: 1234}) is None, "an index built before fills: complete"
    assert loaded_state(dict(stored_positions(None))) is None, "the fill is done"


def test_the_log_is_complete_only_after_the_newest_record_the_budget_dropped() -> None:
    filling = first_state(NOW_MS, heads={A: 900}, window_starts={A: 700})
    read = filling.advanced(A, 900)

    assert complete_since_ms(filling, NOW_MS - 5 * HOUR_MS) == NOW_MS, "the fill is later"
    assert complete_since_ms(filling, NOW_MS + 5) == NOW_MS + 6, "the budget is later"
    assert complete_since_ms(None, NOW_MS - 5 * HOUR_MS) == NOW_MS - 5 * HOUR_MS + 1
    assert complete_since_ms(None, None) is None
    assert not budget_reached(read, None)
    assert not budget_reached(read, NOW_MS - HOUR_MS - 2), "older than the window read"
    assert budget_reached(read, NOW_MS - HOUR_MS - 1), "the next window would go again"
    assert evicted_through({A: 5, (EVICTED_STREAM, 0): 77}) == 77
    assert evicted_through({A: 5}) is None
