"""One delivery attempt over HTTP: sign, send through the SSRF-guarded client, classify."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.delivery.http_client import WebhookClient
from shared.model.endpoint_extras import logged
from shared.model.formats import build_request
from shared.model.messages import LOGGED_BODY_CHARS, AttemptRecord, Endpoint, Outcome
from shared.model.routing import (
    RETRY_AFTER_STATUSES,
    classify_exception,
    classify_status,
    describe_exception,
    parse_retry_after_s,
)
from shared.model.trace_context import TraceContext


@dataclass(frozen=True, slots=True)
class AttemptResult:
    record: AttemptRecord
    retry_after_s: float | None

    @property
    def outcome(self) -> Outcome:
        return self.record.outcome


class Sender:
    """Sends signed webhook requests through one pooled client."""

    def __init__(self, client: WebhookClient, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._clock = clock

    async def attempt(
        self,
        endpoint: Endpoint,
        event: dict[str, Any],
        *,
        webhook_id: str,
        event_id: str,
        attempt: int,
        trace: TraceContext | None = None,
    ) -> AttemptResult:
        """One signed request; with ``trace``, its ``traceparent`` (and ``tracestate``) beside
        the headers the format, the signature and the endpoint set, none of them replaced."""
        started_s = self._clock()
        now = datetime.fromtimestamp(started_s, UTC)
        body: bytes = b""
        headers: dict[str, str] = {}
        status: int | None = None
        error: str | None = None
        response_body: str | None = None
        retry_after_s: float | None = None
        started = time.perf_counter()
        try:
            # Inside the try: a template that fails on this click (TemplateError) is a failed
            # attempt, logged with the template's own message, retried like any other.
            body, headers = build_request(
                endpoint, event, webhook_id=webhook_id, timestamp_s=int(started_s), now=now
            )
            if trace is not None:
                trace.add_to(headers)
            response = await self._client.post(endpoint.url, headers, body)
            status = response.status
            response_body = response.body.decode("utf-8", errors="replace") or None
            if status in RETRY_AFTER_STATUSES:
                retry_after_s = parse_retry_after_s(response.headers.get("retry-after"), now)
            outcome = classify_status(status)
        except Exception as exc:  # noqa: BLE001 - every failure is an outcome to record
            outcome = classify_exception(exc)
            error = describe_exception(exc)[:500]
        duration_ms = (time.perf_counter() - started) * 1000
        record = AttemptRecord(
            webhook_id=webhook_id,
            event_id=event_id,
            endpoint_id=endpoint.id,
            account_id=endpoint.account_id,
            attempt=attempt,
            at_ms=int(started_s * 1000),
            duration_ms=round(duration_ms, 3),
            outcome=outcome,
            status=status,
            error=error,
            response_body=response_body,
            request_headers=logged(headers, endpoint.headers) if endpoint.headers else headers,
            request_body=body[:LOGGED_BODY_CHARS].decode("utf-8", errors="replace"),
        )
        return AttemptResult(record=record, retry_after_s=retry_after_s)
