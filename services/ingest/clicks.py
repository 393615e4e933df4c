"""POST /v1/clicks: validate every event, publish all, answer 202 only once acknowledged."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from services.ingest.auth import Authenticator
from services.ingest.responses import RETRY_AFTER_S, ApiError, invalid
from shared import metrics
from shared.errors import InvalidInput, Problem
from shared.messages import ClickEvent, decode_json, encode, validate_click
from shared.settings import Settings
from shared.topics import Topics

log = structlog.get_logger(__name__)

JSON_TYPES = ("application/json", "")
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson")
_PARTITIONER = DefaultPartitioner()  # what AIOKafkaProducer.send uses by default


def new_event_id() -> str:
    return "evt_" + os.urandom(16).hex()  # as random as uuid4, without building a UUID


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
    decoded = decode_json(raw)
    return decoded if isinstance(decoded, list) else [decoded]


def validate_all(items: list[Any], now: datetime) -> list[ClickEvent]:
    events: list[ClickEvent] = []
    problems: list[Problem] = []
    for index, item in enumerate(items):
        try:
            events.append(validate_click(item, now=now, index=index, default_id=new_event_id()))
        except InvalidInput as exc:
            problems.extend(exc.problems)
    if problems:
        raise InvalidInput(f"{len({p.index for p in problems})} invalid event(s)", problems)
    return events


class ClickIntake:
    def __init__(self, settings: Settings, producer: AIOKafkaProducer, auth: Authenticator) -> None:
        self._settings = settings
        self._producer = producer
        self._auth = auth
        self._topic = Topics(settings.topic_prefix).clicks

    async def post_clicks(self, request: web.Request) -> web.Response:
        if not self._auth.authenticate(request).may_publish:
            raise ApiError(401, "insufficient_scope", "this token may not publish clicks")
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
            metrics.INGEST_EVENTS.labels(result="rejected", reason="malformed").inc()
            raise invalid(exc, status=400) from None
        if not items:
            raise ApiError(422, "invalid_request", "no events in the request")
        if len(items) > self._settings.max_batch_events:
            raise ApiError(
                413,
                "too_many_events",
                f"at most {self._settings.max_batch_events} events per request",
            )
        try:
            events = validate_all(items, datetime.now(UTC))
        except InvalidInput as exc:
            metrics.INGEST_EVENTS.labels(result="rejected", reason="invalid").inc(len(items))
            raise invalid(exc) from None
        await self._publish(events)
        metrics.INGEST_EVENTS.labels(result="accepted", reason="").inc(len(events))
        return web.json_response(
            {"accepted": len(events), "ids": [event.id for event in events]},
            status=202,
            dumps=_json_text,
        )

    async def _publish(self, events: list[ClickEvent]) -> None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._settings.publish_timeout_s):
                await asyncio.gather(*await self._send_batches(events))
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

    async def _send_batches(self, events: list[ClickEvent]) -> list[asyncio.Future[object]]:
        """Hand the events to the producer a partition's batch at a time, partitioned by
        link id as ``send`` would: per-event sends cost more CPU than the rest of a request."""
        partitions = sorted(await self._producer.partitions_for(self._topic))
        batches: dict[int, BatchBuilder] = {}
        sent: list[asyncio.Future[object]] = []
        for event in events:
            key = event.link_id.encode()
            value = encode(event.payload)
            partition = _PARTITIONER(key, partitions, partitions)
            batch = batches.get(partition)
            if batch is None or batch.append(key=key, value=value, timestamp=None) is None:
                if batch is not None:  # full: on its way, and a new one for this partition
                    sent.append(await self._send_batch(batch, partition))
                batch = batches[partition] = self._producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        for partition, batch in batches.items():
            sent.append(await self._send_batch(batch, partition))
        return sent

    async def _send_batch(self, batch: BatchBuilder, partition: int) -> asyncio.Future[object]:
        future: asyncio.Future[object] = await self._producer.send_batch(
            batch, self._topic, partition=partition
        )
        return future


def _json_text(obj: object) -> str:
    return orjson.dumps(obj).decode()
