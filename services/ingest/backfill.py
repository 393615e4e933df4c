"""Backfill: deliver one endpoint's clicks of a past window, read again from ``clicks``.

The window is on ``occurred_at``. The topic is read by record timestamp from a little before
``since`` to its end as it was when the backfill started, so late-written clicks of the window
are found too. Each click that the endpoint wants becomes a delivery envelope for that endpoint
alone, written to the first retry tier due at once; the retry service delivers it like any
other retry, in the endpoint's format and within its rate limit. The envelope keeps the
webhook-id of its (event, endpoint) pair, so a click that was also delivered live reaches the
receiver with the same id and is deduped there.

Progress is kept in memory by whoever runs the backfill (ingest, in the instance that took the
request); envelopes already written are delivered even if that process stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import structlog
from aiokafka import AIOKafkaProducer

from shared.kafka.clients import Record
from shared.kafka.window import read_window
from shared.model.envelopes import first_envelope
from shared.model.errors import InvalidInput, Problem
from shared.model.filters import endpoint_wants
from shared.model.messages import (
    MAX_FUTURE_SKEW,
    ClickEvent,
    DeliveryEnvelope,
    Endpoint,
    decode_stored_click,
    encode,
)
from shared.model.topics import HEADER_DUE_AT_MS, Topics
from shared.ops.settings import Settings

log = structlog.get_logger(__name__)

MAX_WINDOW = timedelta(days=7)
MAX_CLICKS = 100_000
# A click's occurred_at may be up to MAX_FUTURE_SKEW after the time it was written (later ones
# are refused by ingest and set aside by the dispatcher), so reading from this much before
# ``since`` finds every click of the window.
READ_MARGIN = MAX_FUTURE_SKEW
SEND_BATCH = 500  # envelopes sent before their acknowledgements are awaited together
YIELD_EVERY = 200  # records scanned between two turns given to the rest of the event loop

BackfillState = Literal["running", "completed", "limit_reached", "stopped", "cancelled", "failed"]
Lookup = Callable[[str], Endpoint | None]


@dataclass(frozen=True, slots=True)
class BackfillWindow:
    since: datetime
    until: datetime
    max_clicks: int

    def contains(self, when: datetime) -> bool:
        return self.since <= when < self.until


def window_problems(since: datetime, until: datetime, now: datetime) -> list[Problem]:
    """What is wrong with a requested window; empty when it may run."""
    if since.tzinfo is None or until.tzinfo is None:
        return [Problem("since" if since.tzinfo is None else "until", "needs a UTC offset, e.g. Z")]
    if since >= now:
        return [Problem("since", "is not in the past")]
    if until <= since:
        return [Problem("until", "must be after since")]
    if until - since > MAX_WINDOW:
        return [Problem("until", f"the window may span at most {MAX_WINDOW.days} days")]
    return []


@dataclass(slots=True)
class BackfillProgress:
    """Where a backfill is; ``matched`` clicks were sent, ``scheduled`` of them acknowledged."""

    endpoint_id: str
    window: BackfillWindow
    started_at: datetime
    state: BackfillState = "running"
    scanned: int = 0
    matched: int = 0
    scheduled: int = 0
    finished_at: datetime | None = None
    error: str | None = None

    def finish(self, state: BackfillState, error: str | None = None) -> None:
        self.state = state
        self.error = error
        self.finished_at = datetime.now(UTC)


def _readable_click(record: Record, now: datetime) -> ClickEvent | None:
    """The click of a record; None for records the dispatcher set aside as invalid."""
    try:
        return decode_stored_click(record, now=now)
    except InvalidInput:
        return None


class Backfill:
    """One run: reads the window, writes this endpoint's deliveries, updates ``progress``."""

    def __init__(
        self,
        settings: Settings,
        producer: AIOKafkaProducer,
        lookup: Lookup,
        progress: BackfillProgress,
        *,
        records: AsyncGenerator[Record, None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._topics = Topics(settings.topic_prefix)
        self._tier_topic = self._topics.retry(settings.retry_schedule_s[0])
        self._producer = producer
        self._lookup = lookup
        self._progress = progress
        self._clock = clock
        window = progress.window
        since_ms = int((window.since - READ_MARGIN).timestamp() * 1000)
        self._records = (
            records if records is not None else read_window(settings, self._topics.clicks, since_ms)
        )
        self._pending: list[asyncio.Future[Any]] = []

    async def run(self) -> None:
        """Run to an end state; a cancellation is recorded, then passed on."""
        progress = self._progress
        try:
            state, error = await self._scan()
            await self._flush()
        except asyncio.CancelledError:
            progress.finish("cancelled")
            raise
        except Exception as exc:  # any failure must end the run, visibly
            log.exception("backfill_failed", endpoint_id=progress.endpoint_id)
            progress.finish("failed", f"{type(exc).__name__}: {exc}")
        else:
            progress.finish(state, error)
        log.info(
            "backfill_finished",
            endpoint_id=progress.endpoint_id,
            state=progress.state,
            scanned=progress.scanned,
            matched=progress.matched,
            scheduled=progress.scheduled,
        )

    async def _scan(self) -> tuple[BackfillState, str | None]:
        progress = self._progress
        window = progress.window
        now = datetime.fromtimestamp(self._clock(), UTC)
        # Closed on every way out, so the reader's consumer stops when the scan ends early.
        async with contextlib.aclosing(self._records) as records:
            async for record in records:
                progress.scanned += 1
                if progress.scanned % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # the API's requests share this event loop
                # Looked up per record: a deleted or disabled endpoint ends the backfill, and
                # changed filters apply from the next click on.
                endpoint = self._lookup(progress.endpoint_id)
                if endpoint is None:
                    return "stopped", "the endpoint was deleted"
                if not endpoint.enabled:
                    return "stopped", "the endpoint was disabled"
                event = _readable_click(record, now)
                if event is None or not window.contains(event.occurred_at):
                    continue
                if not endpoint_wants(endpoint, event):
                    continue
                if progress.matched >= window.max_clicks:
                    return "limit_reached", f"more than {window.max_clicks} clicks match"
                await self._send(
                    first_envelope(endpoint, event, due_at_ms=int(self._clock() * 1000))
                )
        return "completed", None

    async def _send(self, envelope: DeliveryEnvelope) -> None:
        due = str(envelope.due_at_ms).encode()
        self._pending.append(
            await self._producer.send(
                self._tier_topic,
                key=envelope.endpoint_id.encode(),
                value=encode(envelope),
                headers=[(HEADER_DUE_AT_MS, due)],
            )
        )
        self._progress.matched += 1
        if len(self._pending) >= SEND_BATCH:
            await self._flush()

    async def _flush(self) -> None:
        pending, self._pending = self._pending, []
        await asyncio.gather(*pending)
        self._progress.scheduled += len(pending)
