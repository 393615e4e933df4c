"""Click events for tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def make_click(
    event_id: str | None = None,
    *,
    account_id: str = "acc_42",
    link_id: str = "lnk_9",
    tags: list[str] | None = None,
    domain: str = "短.be",
    **overrides: Any,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "link.clicked",
        "occurred_at": now_rfc3339(),
        "account_id": account_id,
        "link": {
            "id": link_id,
            "domain": domain,
            "key": "abc",
            "url": "https://example.com/x",
            "tags": tags if tags is not None else ["spring"],
        },
        "click": {"ip": "203.0.113.9", "country": "JP", "user_agent": "ua", "referer": "r"},
        "campaign": {"unknown": "fields pass through"},
    }
    if event_id is not None:
        event["id"] = event_id
    event.update(overrides)
    return event
