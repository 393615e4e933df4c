"""Operational webhooks: what clickhook tells the operator (the shortener) about its customers'
endpoints, so that the shortener can tell its customer. Pure; no I/O.

The operator's receiver is a reserved endpoint of a reserved account, built from the settings
(``CLICKHOOK_OPERATIONAL_WEBHOOK_URL`` and ``_SECRET``) by every delivering service, never
stored in ``webhook.endpoints``: no customer can see, change or delete it, and a new URL or
secret takes effect at the next start. An operational event is delivered as a click is: an
envelope in the first retry tier, signed (Standard Webhooks, the same body shape
``{"type", "timestamp", "data"}``), retried on the schedule, dead-lettered, and logged in the
delivery log under the reserved account.

Each event's id is derived from the fact it reports, so that a redo of the same fact (a record
handled again after a crash, two processes seeing the same write) gives the same id, and so the
same ``webhook-id``: the operator dedupes on it as on any webhook.

Nothing about the operational endpoint itself is reported (``reports_on``): its own dead
letter, failures or recovery would otherwise make events about events, without end.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from shared.model.messages import (
    NO_VERSION,
    DeadLetter,
    DeadLetterReason,
    DeliveryEnvelope,
    Endpoint,
    EndpointSecret,
)
from shared.model.signing import webhook_id
from shared.model.times import rfc3339_ms

OPERATIONAL_ACCOUNT_ID = "acct_clickhook_operational"
OPERATIONAL_ENDPOINT_ID = "ep_clickhook_operational"

OperationalEventType = Literal[
    "endpoint.disabled", "endpoint.enabled", "endpoint.recovered", "delivery.exhausted"
]
OPERATIONAL_EVENT_TYPES: tuple[OperationalEventType, ...] = get_args(OperationalEventType)
# Who disabled an endpoint: clickhook (410 Gone, or failing for CLICKHOOK_DISABLE_AFTER), or a
# person (the API, the portal).
DisableTrigger = Literal["automatic", "manual"]
# The dead letters of a delivery whose schedule ran out. The others follow an endpoint that was
# deleted, disabled or answered 410 Gone: endpoint.disabled already says so, and one event per
# delivery that was waiting for it would bury it.
EXHAUSTED_REASONS: frozenset[DeadLetterReason] = frozenset({"exhausted", "endpoint_busy"})
# The first characters of a receiver's answer an event carries (the delivery log has it all).
RESPONSE_BODY_CHARS = 1000

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def reports_on(endpoint_id: str) -> bool:
    """Whether what happens to this endpoint is reported: not for the operational endpoint."""
    return endpoint_id != OPERATIONAL_ENDPOINT_ID


def operational_endpoint(url: str, secret: str) -> Endpoint | None:
    """The operator's receiver as an endpoint (None: operational webhooks are off)."""
    if not url:
        return None
    return Endpoint(
        id=OPERATIONAL_ENDPOINT_ID,
        account_id=OPERATIONAL_ACCOUNT_ID,
        url=url,
        description="operational webhooks (CLICKHOOK_OPERATIONAL_WEBHOOK_URL)",
        secrets=[EndpointSecret(secret)],
        created_at=_EPOCH,
        updated_at=_EPOCH,
        # Fixed: the breaker keeps what it learnt for as long as the process runs.
        version=NO_VERSION,
    )


def operational_event_id(event_type: OperationalEventType, *facts: str) -> str:
    """The id of the event reporting ``facts``: the same facts, the same id."""
    digest = hashlib.sha256("\x00".join((event_type, *facts)).encode()).digest()
    return "evt_op_" + base64.b32encode(digest[:15]).decode().lower()


def _event(
    event_type: OperationalEventType, at_ms: int, facts: tuple[str, ...], data: dict[str, Any]
) -> dict[str, Any]:
    """An event as a click is one: ``id``, ``type`` and ``occurred_at``, then its data."""
    return {
        "id": operational_event_id(event_type, *facts),
        "type": event_type,
        "occurred_at": rfc3339_ms(at_ms),
        **data,
    }


def _endpoint_data(endpoint: Endpoint) -> dict[str, Any]:
    """What identifies the endpoint to the operator: its account, id, URL and metadata (where
    a shortener keeps its own references)."""
    return {
        "account_id": endpoint.account_id,
        "endpoint_id": endpoint.id,
        "url": endpoint.url,
        "metadata": endpoint.metadata,
    }


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def endpoint_disabled(endpoint: Endpoint, trigger: DisableTrigger) -> dict[str, Any]:
    """``endpoint`` as the write that disabled it left it (its version is the fact)."""
    return _event(
        "endpoint.disabled",
        _ms(endpoint.updated_at),
        (endpoint.id, str(endpoint.version)),
        {**_endpoint_data(endpoint), "reason": endpoint.disabled_reason, "trigger": trigger},
    )


def endpoint_enabled(endpoint: Endpoint) -> dict[str, Any]:
    """``endpoint`` as the write that enabled it again left it."""
    return _event(
        "endpoint.enabled",
        _ms(endpoint.updated_at),
        (endpoint.id, str(endpoint.version)),
        _endpoint_data(endpoint),
    )


def switched_by_hand(endpoint: Endpoint) -> dict[str, Any]:
    """The event for ``endpoint`` as a person (the API, the portal, the CLI) just enabled or
    disabled it."""
    return endpoint_enabled(endpoint) if endpoint.enabled else endpoint_disabled(endpoint, "manual")


def endpoint_recovered(
    endpoint: Endpoint, *, recovered_by: str, at_ms: int, failing_since_ms: int | None
) -> dict[str, Any] | None:
    """The first success (of delivery ``recovered_by``, a webhook-id) after a failure streak
    that began at ``failing_since_ms`` (None: before this process saw it). None for the
    operational endpoint."""
    if not reports_on(endpoint.id):
        return None
    return _event(
        "endpoint.recovered",
        at_ms,
        (endpoint.id, recovered_by),
        {
            **_endpoint_data(endpoint),
            "webhook_id": recovered_by,
            "failing_since": None if failing_since_ms is None else rfc3339_ms(failing_since_ms),
        },
    )


def delivery_exhausted(letter: DeadLetter) -> dict[str, Any] | None:
    """The dead letter of a delivery whose schedule ran out, with its endpoint, its event and
    its last attempt; None for any other dead letter, and for the operational endpoint's own
    (no event about an event)."""
    envelope = letter.envelope
    if letter.reason not in EXHAUSTED_REASONS or not reports_on(envelope.endpoint_id):
        return None
    # A replay that dies again is a new fact; a redo of the same letter is not.
    facts = (envelope.webhook_id, envelope.replay_id or "", str(envelope.attempts_made))
    return _event(
        "delivery.exhausted",
        letter.dead_at_ms,
        facts,
        {
            "account_id": envelope.account_id,
            "endpoint_id": envelope.endpoint_id,
            "webhook_id": envelope.webhook_id,
            "event_id": envelope.event_id,
            "reason": letter.reason,
            "attempts_made": envelope.attempts_made,
            "last_attempt": _last_attempt(envelope),
            "event": envelope.event,
        },
    )


def _last_attempt(envelope: DeliveryEnvelope) -> dict[str, Any] | None:
    if not envelope.attempts:
        return None
    last = envelope.attempts[-1]
    body = last.response_body
    return {
        "attempt": last.attempt,
        "at": rfc3339_ms(last.at_ms),
        "outcome": last.outcome,
        "status": last.status,
        "error": last.error,
        "response_body": None if body is None else body[:RESPONSE_BODY_CHARS],
    }


def operational_envelope(event: dict[str, Any], *, due_at_ms: int) -> DeliveryEnvelope:
    """The delivery of ``event`` to the operational endpoint, before any attempt."""
    return DeliveryEnvelope(
        webhook_id=webhook_id(event["id"], OPERATIONAL_ENDPOINT_ID),
        event_id=event["id"],
        endpoint_id=OPERATIONAL_ENDPOINT_ID,
        account_id=OPERATIONAL_ACCOUNT_ID,
        event=event,
        attempts_made=0,
        tier=-1,
        due_at_ms=due_at_ms,
    )
