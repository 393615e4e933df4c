"""Times on the command line: RFC 3339, a date, an age (``24h``, ``7d``), or a word. Pure."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from shared.model.schedule import parse_duration_s

_AGE = re.compile(r"^\d+(?:\.\d+)?(?:ms|s|m|h|d)$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
HINT = (
    "use RFC 3339 (2026-11-27T10:00:00Z), a date (2026-11-27), an age (24h, 7d), "
    "now, today or yesterday"
)


def parse_time(text: str, now: datetime) -> datetime:
    """The instant ``text`` names, in UTC; ``now`` anchors ages and words.

    An age is that long before ``now``; a date is its midnight, UTC; ``today`` and
    ``yesterday`` are midnights, UTC. Raises ``ValueError`` with what would be accepted.
    """
    word = text.strip().lower()
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if word == "now":
        return now.astimezone(UTC)
    if word == "today":
        return midnight
    if word == "yesterday":
        return midnight - timedelta(days=1)
    if _AGE.match(word):
        return now.astimezone(UTC) - timedelta(seconds=parse_duration_s(word))
    if _DATE.match(word):
        return _rfc3339(f"{word}T00:00:00Z", text)
    return _rfc3339(text.strip(), text)


def _rfc3339(value: str, text: str) -> datetime:
    try:
        when = datetime.fromisoformat(value.upper())
    except ValueError:
        raise ValueError(f"{text!r} is not a time: {HINT}") from None
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset: add Z or +hh:mm")
    return when.astimezone(UTC)


def to_ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def rfc3339_ms(at_ms: int) -> str:
    """``1764237600123`` → ``2025-11-27T10:00:00.123Z``."""
    when = datetime.fromtimestamp(at_ms / 1000, tz=UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at_ms % 1000:03d}Z"
