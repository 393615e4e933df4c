"""Times as people give them, to the API, the CLI and the portal alike. Pure.

One set of formats everywhere: an age back from now (``30m``, ``24h``, ``7d``), RFC 3339 with
an offset (``2026-11-27T10:00:00Z``), a date (midnight UTC), unix milliseconds
(``1764237600000``), or ``now``, ``today``, ``yesterday``. The error says what would do, never
which field it was: the caller names the field (``since``, ``--until``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from shared.model.schedule import parse_duration_s

_AGE = re.compile(r"^\d+(?:\.\d+)?(?:ms|s|m|h|d)$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_UNIX_MS = re.compile(r"^\d+$")
# Unix milliseconds of 2000-01-01: smaller numbers are unix seconds or a typo, not a time any
# clickhook record has (occurred_at is 2000 or later).
EARLIEST_UNIX_MS = 946_684_800_000
TIME_FORMATS = (
    "an age back from now (30m, 24h, 7d), RFC 3339 (2026-11-27T10:00:00Z), a date "
    "(2026-11-27, midnight UTC), unix milliseconds (1764237600000), now, today or yesterday"
)


def parse_time(text: str | int, now: datetime) -> datetime:
    """The instant ``text`` names, in UTC; ``now`` anchors ages and words.

    An integer (or a string of digits) is unix milliseconds. Raises ``ValueError`` saying
    what would be accepted.
    """
    if isinstance(text, int):
        return _unix_ms(text, str(text))
    word = text.strip().lower()
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    words = {"now": now.astimezone(UTC), "today": midnight, "yesterday": midnight - timedelta(1)}
    if word in words:
        return words[word]
    if _UNIX_MS.match(word):
        return _unix_ms(int(word), text)
    if _AGE.match(word):
        return now.astimezone(UTC) - timedelta(seconds=parse_duration_s(word))
    if _DATE.match(word):
        return _rfc3339(f"{word}T00:00:00Z", text)
    return _rfc3339(text.strip(), text)


def _unix_ms(value: int, text: str) -> datetime:
    if value < EARLIEST_UNIX_MS:
        raise ValueError(
            f"{text!r} is before 2000 as unix milliseconds (unix seconds? multiply by 1000)"
        )
    try:
        return datetime.fromtimestamp(value / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"{text!r} is too far in the future") from None


def _rfc3339(value: str, text: str) -> datetime:
    try:
        when = datetime.fromisoformat(value.upper())
    except ValueError:
        raise ValueError(f"{text!r} is not a time: use {TIME_FORMATS}") from None
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset: add Z or +hh:mm")
    return when.astimezone(UTC)


def to_ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def utc_label(at_ms: int) -> str:
    """``1764237600123`` → ``2025-11-27 10:00:00 UTC``: a time for a reader, to the second."""
    return datetime.fromtimestamp(at_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def rfc3339_ms(at_ms: int) -> str:
    """``1764237600123`` → ``2025-11-27T10:00:00.123Z``."""
    when = datetime.fromtimestamp(at_ms / 1000, tz=UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at_ms % 1000:03d}Z"
