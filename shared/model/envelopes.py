"""Building delivery envelopes: the one place a delivery's identity is decided."""

from __future__ import annotations

from shared.model.messages import ClickEvent, DeliveryEnvelope, Endpoint
from shared.model.signing import webhook_id


def first_envelope(
    endpoint: Endpoint, event: ClickEvent, *, due_at_ms: int = 0
) -> DeliveryEnvelope:
    """The delivery of ``event`` to ``endpoint`` before any attempt. Its webhook-id depends on
    the pair alone, so live deliveries, retries, replays and backfills all share it."""
    return DeliveryEnvelope(
        webhook_id=webhook_id(event.id, endpoint.id),
        event_id=event.id,
        endpoint_id=endpoint.id,
        account_id=endpoint.account_id,
        event=event.payload,
        attempts_made=0,
        tier=-1,
        due_at_ms=due_at_ms,
    )
