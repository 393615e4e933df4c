"""/v1/endpoints/{id}/backfill: start, watch and cancel an endpoint's backfill.

A backfill runs as a task of the ingest instance that took the POST, and its progress lives in
that instance's memory: GET and DELETE reach it only on the same instance (behind a load
balancer, use session affinity or ask each instance), and a restart forgets it. Envelopes it
already wrote are delivered regardless; a new backfill of the same window sends them again with
the same webhook-ids.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
from aiohttp import web
from aiokafka import AIOKafkaProducer

from services.ingest.api_types import BackfillRequest, BackfillStatus
from services.ingest.backfill import (
    Backfill,
    BackfillProgress,
    BackfillWindow,
    window_problems,
)
from services.ingest.endpoints_api import EndpointApi
from services.ingest.responses import (
    ApiError,
    body_problem,
    invalid,
    parse_api_time,
    struct_response,
)
from shared.kafka.endpoint_store import EndpointStore
from shared.model.errors import InvalidInput
from shared.model.messages import decode_json
from shared.ops.settings import Settings

# Each running backfill reads ``clicks`` with a consumer of its own on the API's event loop.
MAX_RUNNING = 2
BUSY_RETRY_AFTER_S = "30"


@dataclass(slots=True)
class _Job:
    progress: BackfillProgress
    task: asyncio.Task[None]

    @property
    def running(self) -> bool:
        return not self.task.done()


async def _read_request(request: web.Request) -> BackfillRequest:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send application/json")
    try:
        obj = decode_json(await request.read())
        return msgspec.convert(obj, BackfillRequest, strict=True)
    except InvalidInput as exc:
        raise invalid(exc) from None
    except msgspec.ValidationError as exc:
        raise ApiError(422, "invalid_request", "invalid backfill", [body_problem(exc)]) from None


class BackfillApi:
    def __init__(
        self,
        settings: Settings,
        endpoints: EndpointApi,
        store: EndpointStore,
        producer: AIOKafkaProducer,
    ) -> None:
        self._settings = settings
        self._endpoints = endpoints
        self._store = store
        self._producer = producer
        self._jobs: dict[str, _Job] = {}  # endpoint id -> its latest backfill

    async def start(self, request: web.Request) -> web.Response:
        endpoint = self._endpoints.owned(request)
        body = await _read_request(request)
        now = datetime.now(UTC)
        since = parse_api_time(body.since, "since", now)
        until = now if body.until is None else parse_api_time(body.until, "until", now)
        problems = window_problems(since, until, now)
        if problems:
            raise ApiError(422, "invalid_request", "invalid backfill window", problems)
        if not endpoint.enabled:
            raise ApiError(409, "endpoint_disabled", "enable the endpoint before a backfill")
        current = self._jobs.get(endpoint.id)
        if current is not None and current.running:
            raise ApiError(409, "backfill_running", "this endpoint's backfill is still running")
        if sum(job.running for job in self._jobs.values()) >= MAX_RUNNING:
            raise ApiError(
                503,
                "busy",
                "too many backfills running here; try again later",
                headers={"retry-after": BUSY_RETRY_AFTER_S},
            )
        window = BackfillWindow(since=since, until=until, max_clicks=body.max_clicks)
        progress = BackfillProgress(endpoint_id=endpoint.id, window=window, started_at=now)
        run = Backfill(self._settings, self._producer, self._store.table.get, progress).run()
        task = asyncio.create_task(run, name=f"backfill-{endpoint.id}")
        self._jobs[endpoint.id] = _Job(progress, task)
        return struct_response(_status(progress), status=202)

    async def status(self, request: web.Request) -> web.Response:
        job = self._job(request)
        return struct_response(_status(job.progress))

    async def cancel(self, request: web.Request) -> web.Response:
        """Stop writing deliveries; those already written are still delivered."""
        job = self._job(request)
        if not job.running:
            raise ApiError(409, "not_running", f"the backfill has ended: {job.progress.state}")
        job.task.cancel()
        await asyncio.wait({job.task})
        return struct_response(_status(job.progress))

    async def close(self, _: web.Application) -> None:
        """On shutdown: cancel what still runs (progress is lost with the process anyway)."""
        running = [job.task for job in self._jobs.values() if job.running]
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)

    def _job(self, request: web.Request) -> _Job:
        endpoint = self._endpoints.owned(request)
        job = self._jobs.get(endpoint.id)
        if job is None:
            raise ApiError(404, "not_found", "no backfill of this endpoint on this instance")
        return job


def _status(progress: BackfillProgress) -> BackfillStatus:
    window = progress.window
    return BackfillStatus(
        endpoint_id=progress.endpoint_id,
        state=progress.state,
        since=window.since,
        until=window.until,
        max_clicks=window.max_clicks,
        scanned=progress.scanned,
        matched=progress.matched,
        scheduled=progress.scheduled,
        started_at=progress.started_at,
        finished_at=progress.finished_at,
        error=progress.error,
    )
