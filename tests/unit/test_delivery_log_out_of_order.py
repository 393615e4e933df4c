"""The index's limits when rows arrive out of time order, as a fresh index's history fill
writes them (the newest hour first, older hours after): the per-endpoint caps and the byte
budget keep the newest rows by time, whatever was written last."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.ingest.delivery_log import store
from services.ingest.delivery_log.store import AttemptFilter, Fetched, LogReader, LogWriter
from shared.model.messages import encode
from tests.support.attempts import attempt, now_ms

PAGE_1K = "<html>" + "x" * 1018
BUDGET = 1 << 20


def attempts_at(numbers: range, base_ms: int, **fields: Any) -> list[Fetched]:
    """Attempt ``n`` of ep_1 at ``base_ms + n`` s, at offset ``n``."""
    return [
        Fetched(0, n, encode(attempt("ep_1", f"evt_{n}", at_ms=base_ms + n * 1000, **fields)))
        for n in numbers
    ]


def kept_numbers(reader: LogReader) -> list[int]:
    found = reader.attempts("ep_1", AttemptFilter(), 100_000)
    return [int(a.event_id.removeprefix("evt_")) for a in found]


def test_an_endpoint_capped_while_older_rows_arrive_keeps_its_newest(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite3"
    writer, reader = LogWriter(path, per_endpoint=100, max_bytes=64 << 20), LogReader(path)
    base = now_ms() - 7_200_000

    writer.add_attempts(attempts_at(range(200, 300), base), now_ms())
    for first in range(100, -1, -100):  # older history, an hour-window at a time
        writer.add_attempts(attempts_at(range(first, first + 100), base), now_ms())

    assert kept_numbers(reader) == list(reversed(range(200, 300)))


def test_the_budget_evicts_the_oldest_rows_not_the_last_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Eviction goes in rounds of EVICT_ROWS per table (5,000: a small part of a real budget,
    # more rows than this 1 MiB one holds); rounds of 100 keep the same proportion.
    monkeypatch.setattr(store, "EVICT_ROWS", 100)
    path = tmp_path / "log.sqlite3"
    writer = LogWriter(path, per_endpoint=100_000, max_bytes=BUDGET)
    reader = LogReader(path)
    base = now_ms() - 7_200_000
    failed = {"outcome": "http_5xx", "status": 502, "response_body": PAGE_1K}

    writer.add_attempts(attempts_at(range(2600, 3000), base, **failed), now_ms())
    for first in range(2500, -1, -100):  # four times the budget, older and older
        writer.add_attempts(attempts_at(range(first, first + 100), base, **failed), now_ms())
        assert writer.used_bytes() <= BUDGET

    kept = kept_numbers(reader)
    assert 400 <= len(kept) < 3000, "the budget evicted"
    assert kept[:400] == list(reversed(range(2600, 3000))), "the newest, though written first"
    # What went was the oldest when it went; rows older still, written after it (the fill
    # reads older and older hours), stay until the next round of eviction takes them first.
