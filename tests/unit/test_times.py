"""Times as the API, the CLI and the portal take them: RFC 3339, dates, ages, unix ms and
words, all to UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.model.times import parse_time, rfc3339_ms

NOW = datetime(2026, 11, 27, 10, 30, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-27T09:00:00Z", datetime(2026, 11, 27, 9, tzinfo=UTC)),
        ("2026-11-27T11:00:00+02:00", datetime(2026, 11, 27, 9, tzinfo=UTC)),
        ("2026-11-27t09:00:00.250z", datetime(2026, 11, 27, 9, 0, 0, 250_000, tzinfo=UTC)),
        ("2026-11-20", datetime(2026, 11, 20, tzinfo=UTC)),
        ("24h", NOW - timedelta(hours=24)),
        ("7d", NOW - timedelta(days=7)),
        ("30m", NOW - timedelta(minutes=30)),
        ("90s", NOW - timedelta(seconds=90)),
        ("now", NOW),
        ("today", datetime(2026, 11, 27, tzinfo=UTC)),
        ("yesterday", datetime(2026, 11, 26, tzinfo=UTC)),
        (" Yesterday ", datetime(2026, 11, 26, tzinfo=UTC)),
        ("1764237600123", datetime(2025, 11, 27, 10, 0, 0, 123_000, tzinfo=UTC)),
        (1_764_237_600_000, datetime(2025, 11, 27, 10, tzinfo=UTC)),
    ],
)
def test_parse_time_accepts(text: str | int, expected: datetime) -> None:
    assert parse_time(text, NOW) == expected


def test_parse_time_is_utc_whatever_the_offset_given() -> None:
    assert parse_time("2026-11-27T11:00:00+02:00", NOW).tzinfo == UTC


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("last tuesday", "is not a time: use an age"),
        ("24", "before 2000 as unix milliseconds"),
        ("1764237600", "unix seconds\\? multiply by 1000"),
        ("99999999999999999999", "too far in the future"),
        ("-1d", "is not a time"),
        ("2026-11-27T09:00:00", "has no UTC offset"),
        ("2026-13-01", "is not a time"),
    ],
)
def test_parse_time_refuses_with_what_would_do(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_time(text, NOW)


def test_rfc3339_ms_keeps_the_milliseconds() -> None:
    assert rfc3339_ms(1_764_239_415_007) == "2025-11-27T10:30:15.007Z"
