"""POST /v1/clicks: validate every event, publish all, answer 202 only once acknowledged."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Counter

from services.ingest.api_types import Accepted
from services.ingest.auth import Authenticator, insufficient_scope
from services.ingest.responses import RETRY_AFTER_S, ApiError, invalid, struct_response
from shared.kafka.endpoint_store import EndpointStore
from shared.model.errors import InvalidInput, Problem
from shared.model.messages import (
    ClickEvent,
    decode_json,
    decode_json_items,
    encode,
    validate_click,
)
from shared.model.topics import Topics, endpoints_at_headers
from shared.model.trace_context import TraceContext, from_http
from shared.ops import metrics, tracing
from shared.ops.settings import Settings

log = structlog.get_logger(__name__)

JSON_TYPES = ("application/json", "")
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson")


def new_event_ids(count: int) -> list[str]:
    """Ids as random as uuid4, from one read of the OS's randomness for a whole batch."""
    random_hex = os.urandom(16 * count).hex()
    return ["evt_" + random_hex[at : at + 32] for at in range(0, len(random_hex), 32)]


def parse_body(raw: bytes, content_type: str) -> list[Any]:
    """One event, a JSON array, or NDJSON, as a list of decoded objects."""
    if content_type in NDJSON_TYPES:
        items: list[Any] = []
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append(decode_json(line))
            except InvalidInput as exc:
                problem = exc.problems[0]
                raise InvalidInput(
                    "malformed NDJSON", [Problem("$", f"line {number}: {problem.problem}")]
                ) from None
        return items
    return decode_json_items(raw)


def validate_all(items: list[Any], now: datetime) -> list[ClickEvent]:
    events: list[ClickEvent] = []
    problems: list[Problem] = []
    for index, (item, default_id) in enumerate(zip(items, new_event_ids(len(items)), strict=True)):
        try:
            events.append(validate_click(item, now=now, index=index, default_id=default_id))
        except InvalidInput as exc:
            problems.extend(exc.problems)
    if problems:
        raise InvalidInput(f"{len({p.index for p in problems})} invalid event(s)", problems)
    return events


class ClickIntake:
    def __init__(
        self,
        settings: Settings,
        producer: AIOKafkaProducer,
        auth: Authenticator,
        endpoints: EndpointStore,
    ) -> None:
        self._settings = settings
        self._producer = producer
        self._auth = auth
        self._endpoints = endpoints
        self._topic = Topics(settings.topic_prefix).clicks
        self._accepted = metrics.INGEST_EVENTS.labels(result="accepted", reason="")
        self._malformed = self._rejected("malformed")
        self._invalid = self._rejected("invalid")

    @staticmethod
    def _rejected(reason: metrics.IngestRejection) -> Counter:
        return metrics.INGEST_EVENTS.labels(result="rejected", reason=reason)

    async def post_clicks(self, request: web.Request) -> web.Response:
        if not self._auth.authenticate(request).may_publish:
            raise insufficient_scope("publish clicks")
        content_type = request.content_type if request.body_exists else ""
        if content_type not in JSON_TYPES + NDJSON_TYPES:
            raise ApiError(
                415, "unsupported_media_type", "send application/json or application/x-ndjson"
            )
        raw = await request.read()
        metrics.INGEST_REQUEST_BYTES.observe(len(raw))
        try:
            items = parse_body(raw, content_type)
        except InvalidInput as exc:
            self._malformed.inc()
            raise invalid(exc, status=400) from None
        if not items:
            raise ApiError(422, "invalid_request", "no events in the request")
        if len(items) > self._settings.max_batch_events:
            raise ApiError(
                413,
                "too_many_events",
                f"too many events: at most {self._settings.max_batch_events:,} per request",
            )
        try:
            events = validate_all(items, datetime.now(UTC))
        except InvalidInput as exc:
            self._invalid.inc(len(items))
            raise invalid(exc) from None
        await self._publish(events, from_http(request.headers))
        self._accepted.inc(len(events))
        return struct_response(
            Accepted(accepted=len(events), ids=[event.id for event in events]), status=202
        )

    async def _publish(self, events: list[ClickEvent], trace: TraceContext | None) -> None:
        """Each click's record carries the request's trace context (the publish span's when
        tracing is on) and how far the endpoint table had read (``clickhook-endpoints-at``)."""
        with tracing.publish_span(trace, topic=self._topic, events=len(events)) as span:
            traced = [] if span.context is None else span.context.record_headers()
            await self._publish_traced(
                events, traced + endpoints_at_headers(self._endpoints.stamp())
            )

    async def _publish_traced(
        self, events: list[ClickEvent], headers: list[tuple[str, bytes]]
    ) -> None:
        started = time.perf_counter()
        records = [(event.link_id.encode(), encode(event.payload)) for event in events]
        try:
            async with asyncio.timeout(self._settings.publish_timeout_s):
                # One wait for the request's batches, not a future per click (shared.kafka.bulk).
                await self._producer.send_all(self._topic, records, headers)
        except (KafkaError, TimeoutError) as exc:
            metrics.PRODUCE_ERRORS.labels(topic=self._topic).inc()
            log.warning("publish_failed", events=len(events), error=repr(exc))
            raise ApiError(
                503,
                "broker_unavailable",
                "the events could not be stored; retry with the same ids",
                headers={"retry-after": RETRY_AFTER_S},
            ) from None
        metrics.INGEST_PUBLISH_SECONDS.observe(time.perf_counter() - started)
