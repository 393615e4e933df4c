"""Which history a fresh index still has to read, and how far back it is complete: pure rules,
no Kafka client and no event loop (``history.py`` does the reading).

A fresh index serves the newest hour first: its following consumer starts where the topics'
records reach one hour before the start (by Kafka timestamp), and the history older than that
is filled behind it, an hour of it at a time, newest hour first. Each step of the fill is one
*window* ``[since_ms - WINDOW_MS, since_ms)``, read forward in every partition over the offsets
that hold it: the first offset at or after the window's start up to the first one at or after
its end (the start of the window read before). Windows meet exactly, so no record is read
twice or skipped. Once a window is read in every partition the log is complete since its start.

Newest first, rather than one pass from the oldest record: what a reader looks at (the newest
page, then older ones) becomes complete first, ``complete_since`` moves back an hour at a time
instead of jumping at the end, and when the byte budget or the per-endpoint caps cannot hold the
whole history, the rows read last are the ones those limits would drop anyway. It costs two
timestamp look-ups per window, against hours of reading.

Where the fill stands is kept in the index's ``positions`` table, beside the topic positions
and in the same transactions as the rows it reads, so a restart during the fill resumes it.
It uses stream names no topic can have (``~`` is not allowed in a Kafka topic name).

The byte budget can drop history too: past it the oldest rows go, whichever endpoint they
belong to (a PostgreSQL store drops its oldest partitions: attempts' hours, dead letters'
days). The store keeps the newest record time
it dropped that way (``EVICTED_STREAM``, in the transaction that dropped the rows), and the log
is complete only after it: ``complete_since`` is the later of the two. A fill whose window
the budget has already reached into stops there: what it would read next is older than
anything the budget keeps, so it would only be dropped again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

HOUR_MS = 3_600_000
# What a fresh index serves first, and the span of history each step of the fill reads.
NEWEST_FIRST_MS = HOUR_MS
WINDOW_MS = HOUR_MS

SINCE_STREAM = "~complete-since"
# The newest record time the byte budget dropped (absent: it never dropped any).
EVICTED_STREAM = "~evicted-through"
START_SUFFIX = "~fill-start"
NEXT_SUFFIX = "~fill-next"
END_SUFFIX = "~fill-end"
# ``complete since`` when nothing is left to fill: the index holds all the topics keep.
COMPLETE = 0

# A topic partition, as the index names it.
Key = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Window:
    """One partition's offsets of the window being read, ``[start, end)``, and the next one
    to read."""

    start: int
    next: int
    end: int

    @property
    def done(self) -> bool:
        return self.next >= self.end


@dataclass(frozen=True, slots=True)
class FillState:
    """The fill of one index: everything since ``since_ms`` is indexed, and the window before
    it, ``[since_ms - WINDOW_MS, since_ms)``, is being read."""

    since_ms: int
    windows: dict[Key, Window] = field(default_factory=dict)

    @property
    def window_done(self) -> bool:
        return all(w.done for w in self.windows.values())

    def left(self) -> dict[Key, Window]:
        """The partitions with records of the window still to read."""
        return {key: w for key, w in self.windows.items() if not w.done}

    def advanced(self, key: Key, next_offset: int) -> FillState:
        """The state once ``key`` was read up to ``next_offset`` (never past its window)."""
        window = self.windows[key]
        moved = min(max(window.next, next_offset), window.end)
        return FillState(
            self.since_ms, {**self.windows, key: Window(window.start, moved, window.end)}
        )


def newest_first_since(now_ms: int) -> int:
    """Where a fresh index starts following the topics: the newest hour."""
    return now_ms - NEWEST_FIRST_MS


def offsets_at(found: Mapping[Key, int | None], ends: Mapping[Key, int]) -> dict[Key, int]:
    """The first offset of each partition at or after a time (Kafka's timestamp look-up); a
    partition with no record that new starts at its end."""
    return {key: ends[key] if found.get(key) is None else int(found[key] or 0) for key in ends}


def first_state(
    since_ms: int, heads: Mapping[Key, int], window_starts: Mapping[Key, int]
) -> FillState:
    """The fill of a fresh index that follows the topics from ``heads`` (their offsets at
    ``since_ms``): the hour before that first, from ``window_starts`` (its offsets)."""
    return FillState(since_ms, _windows(window_starts, heads))


def next_state(
    state: FillState, window_starts: Mapping[Key, int], beginnings: Mapping[Key, int]
) -> FillState | None:
    """The window after ``state``'s (read in full): an hour further back, from
    ``window_starts`` (its offsets, looked up at ``next_window_ms``) to where the last one
    started. None when the last one started at the beginning of every partition (what
    retention left): nothing older is left to read."""
    ends = {key: w.start for key, w in state.windows.items()}
    nothing_older = all(end <= beginnings.get(key, 0) for key, end in ends.items())
    # No record is older than time 0: a window that started there was the last.
    if nothing_older or state.since_ms - WINDOW_MS <= COMPLETE:
        return None
    return FillState(state.since_ms - WINDOW_MS, _windows(window_starts, ends))


def _windows(starts: Mapping[Key, int], ends: Mapping[Key, int]) -> dict[Key, Window]:
    windows: dict[Key, Window] = {}
    for key, end in ends.items():
        start = min(starts.get(key, end), end)
        windows[key] = Window(start, start, end)
    return windows


def next_window_ms(state: FillState) -> int:
    """Where the window after ``state``'s starts: the time to look its offsets up at."""
    return max(COMPLETE, state.since_ms - 2 * WINDOW_MS)


def complete_since_ms(state: FillState | None, evicted_through_ms: int | None = None) -> int | None:
    """Since when the index holds every record: after what the fill has yet to read and
    after the newest record the byte budget dropped; None once it holds all the topics keep."""
    found = []
    if state is not None:
        found.append(state.since_ms - WINDOW_MS if state.window_done else state.since_ms)
    if evicted_through_ms is not None:
        found.append(evicted_through_ms + 1)
    return max(found, default=None)


def budget_reached(state: FillState, evicted_through_ms: int | None) -> bool:
    """Whether the byte budget has dropped records of the window the fill has read in full
    (or newer): every older one would be the first to go again."""
    return evicted_through_ms is not None and evicted_through_ms + 1 >= state.since_ms - WINDOW_MS


def evicted_through(stored: Mapping[Key, int]) -> int | None:
    """The newest record time the byte budget dropped, as the positions table keeps it."""
    return stored.get((EVICTED_STREAM, 0))


# --- kept in the index's positions table ---------------------------------------------------


def stored_positions(state: FillState | None) -> list[tuple[Key, int]]:
    """The state as rows of the index's positions table (``None``: the fill is done)."""
    if state is None:
        return [((SINCE_STREAM, 0), COMPLETE)]
    rows: list[tuple[Key, int]] = [((SINCE_STREAM, 0), state.since_ms)]
    for (topic, partition), window in state.windows.items():
        rows.append(((topic + START_SUFFIX, partition), window.start))
        rows.append(((topic + NEXT_SUFFIX, partition), window.next))
        rows.append(((topic + END_SUFFIX, partition), window.end))
    return rows


def next_positions(reached: Iterable[tuple[Key, int]]) -> list[tuple[Key, int]]:
    """How far the fill read in each partition, as rows of the positions table: written in
    the transaction of the rows it read."""
    return [((topic + NEXT_SUFFIX, partition), offset) for (topic, partition), offset in reached]


def loaded_state(stored: Mapping[Key, int]) -> FillState | None:
    """The fill as the index kept it; None when there is none to go on with: done, or an
    index built from the topics' beginning (before fills existed)."""
    since_ms = stored.get((SINCE_STREAM, 0), COMPLETE)
    if since_ms == COMPLETE:
        return None
    windows: dict[Key, Window] = {}
    for (stream, partition), end in stored.items():
        if stream.endswith(END_SUFFIX):
            topic = stream.removesuffix(END_SUFFIX)
            start = stored.get((topic + START_SUFFIX, partition), end)
            next_offset = stored.get((topic + NEXT_SUFFIX, partition), start)
            windows[(topic, partition)] = Window(start, next_offset, end)
    return FillState(since_ms, windows)
