"""/v1/endpoints/{id}/replay: start, watch and cancel a replay of an endpoint's dead letters.

A replay is a job (``shared.kafka.replay``) that runs as a task of the ingest instance that
took the POST; its progress is in the ``webhook.replays`` topic, so any instance answers GET
and DELETE, and a restart shows it as ``interrupted`` (what it had sent is delivered; a new
replay of the same window skips the letters it covered).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import structlog
from aiohttp import web
from aiokafka import AIOKafkaProducer

from services.ingest.api_types import ReplayRequest, ReplayStatus
from services.ingest.endpoints_api import EndpointApi
from services.ingest.responses import ApiError, parse_api_time, read_json_body, struct_response
from shared.kafka.replay import (
    END_WRITE_TIMEOUT_S,
    ReplayJobs,
    ReplayRun,
    ReplayRunning,
    now_ms,
    start_job,
)
from shared.model.errors import Problem
from shared.model.messages import Endpoint, ReplayJob
from shared.ops.settings import Settings
from shared.ops.supervision import Supervisor

log = structlog.get_logger(__name__)

# Each running replay reads the DLQ with a consumer of its own on the API's event loop.
MAX_RUNNING = 2
BUSY_RETRY_AFTER_S = "30"
CANCEL_WAIT_S = 10.0
# How long a shutdown waits for the runs here to record their cancel: room for a run's consumer
# to close and for its end's write, which gives up after END_WRITE_TIMEOUT_S.
SHUTDOWN_WAIT_S = END_WRITE_TIMEOUT_S + 2.0


def _owner() -> str:
    """This process, as named on the jobs it runs."""
    return f"{socket.gethostname()}/{os.getpid()}"


def replay_status(job: ReplayJob) -> ReplayStatus:
    return ReplayStatus(
        id=job.id,
        endpoint_id=job.endpoint_id,
        state=job.state_at(now_ms()),
        since=_time(job.since_ms),
        until=_time(job.until_ms),
        matched=job.matched,
        replayed=job.replayed,
        already_replayed=job.already_replayed,
        started_at=_time(job.started_at_ms),
        updated_at=_time(job.updated_at_ms),
        finished_at=_time(job.finished_at_ms) if job.finished_at_ms is not None else None,
        error=job.error,
    )


def replay_running(job: ReplayJob) -> ApiError:
    """409: the endpoint's running job, with its id and progress in the details."""
    status = replay_status(job)
    progress = {
        "replay.id": status.id,
        "replay.state": status.state,
        "replay.matched": str(status.matched),
        "replay.replayed": str(status.replayed),
        "replay.already_replayed": str(status.already_replayed),
        "replay.started_at": status.started_at.isoformat(),
        "replay.updated_at": status.updated_at.isoformat(),
    }
    return ApiError(
        409,
        "replay_running",
        f"this endpoint's replay {job.id} is still running",
        [Problem(field, value) for field, value in progress.items()],
    )


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def replay_window(body: ReplayRequest, now: datetime) -> tuple[datetime, datetime]:
    """The window asked for, in UTC; 422 naming the field (``since``) that is not a time."""
    since = parse_api_time(body.since, "since", now)
    until = now if body.until is None else parse_api_time(body.until, "until", now)
    if until <= since:
        problems = [Problem("until", "must be after since")]
        raise ApiError(422, "invalid_request", "invalid replay window", problems)
    return since, until


class ReplayApi:
    def __init__(
        self,
        settings: Settings,
        endpoints: EndpointApi,
        producer: AIOKafkaProducer,
        supervisor: Supervisor,
    ) -> None:
        self._settings = settings
        self._endpoints = endpoints
        self._producer = producer
        self._supervisor = supervisor
        self._owner = _owner()
        self.jobs = ReplayJobs(settings, producer)
        self._tasks: dict[str, asyncio.Task[ReplayJob]] = {}  # job id -> its run, here

    async def lifecycle(self, _: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: follow the jobs topic; at shutdown, stop the runs here."""
        await self.jobs.start()
        self._supervisor.start("replay_follower", self.jobs.follow())
        try:
            yield
        finally:
            await self._stop_runs()
            await self._supervisor.cancel("replay_follower")
            await self.jobs.stop()

    async def _stop_runs(self) -> None:
        """Cancel the runs here and wait for them to record it, at most ``SHUTDOWN_WAIT_S``:
        a shutdown never hangs on one. A run still going is left to the process's exit; its
        job, no longer heartbeated, shows as ``interrupted`` once stale (``ReplayJob.state_at``),
        as if this process had died."""
        running = {job_id: task for job_id, task in self._tasks.items() if not task.done()}
        for task in running.values():
            task.cancel()
        if not running:
            return
        done, left = await asyncio.wait(running.values(), timeout=SHUTDOWN_WAIT_S)
        for job_id, task in running.items():
            # A run may end in another error than its cancel (aiokafka's ProducerClosed, the
            # producer stopped under its end's write): retrieved here, or asyncio reports it
            # as "Task exception was never retrieved" once the task is collected.
            if task in done and not task.cancelled() and (error := task.exception()) is not None:
                log.warning("replay_run_failed_at_shutdown", job_id=job_id, error=repr(error))
        if left:
            log.warning(
                "replay_runs_left_running",
                job_ids=sorted(job_id for job_id, task in running.items() if task in left),
                timeout_s=SHUTDOWN_WAIT_S,
            )

    async def start(self, request: web.Request) -> web.Response:
        endpoint = self._endpoints.owned(request)
        body = await read_json_body(request, ReplayRequest, "invalid replay")
        job = await self.start_job(endpoint, body)
        return struct_response(replay_status(job), status=202)

    async def start_job(self, endpoint: Endpoint, body: ReplayRequest) -> ReplayJob:
        """Start a replay of ``endpoint``'s dead letters (the API's and the portal's way)."""
        since, until = replay_window(body, datetime.now(UTC))
        if not endpoint.enabled:
            raise ApiError(409, "endpoint_disabled", "enable the endpoint before a replay")
        await self.jobs.loaded.wait()
        if (running := self.jobs.running(endpoint.id)) is not None:
            raise replay_running(running)  # seen without asking the broker
        if sum(not task.done() for task in self._tasks.values()) >= MAX_RUNNING:
            raise ApiError(
                503,
                "busy",
                "too many replays running here; try again later",
                headers={"retry-after": BUSY_RETRY_AFTER_S},
            )
        window_ms = (int(since.timestamp() * 1000), int(until.timestamp() * 1000))
        try:
            job = await start_job(
                self._settings,
                self.jobs,
                endpoint.id,
                endpoint.account_id,
                window_ms,
                owner=self._owner,
            )
        except ReplayRunning as exc:
            raise replay_running(exc.running) from exc
        run = ReplayRun(self._settings, self._producer, self.jobs, job)
        self._tasks[job.id] = asyncio.create_task(run.run(), name=f"replay-{job.id}")
        log.info("replay_started", endpoint_id=endpoint.id, job_id=job.id)
        return job

    async def status(self, request: web.Request) -> web.Response:
        endpoint = self._endpoints.owned(request)
        return struct_response(replay_status(self._latest(endpoint)))

    async def cancel(self, request: web.Request) -> web.Response:
        """Stop sending letters; those already sent are still delivered."""
        endpoint = self._endpoints.owned(request)
        job = await self.cancel_job(self._latest(endpoint))
        return struct_response(replay_status(job))

    async def cancel_job(self, job: ReplayJob) -> ReplayJob:
        if job.state_at(now_ms()) != "running":
            raise ApiError(409, "not_running", f"the replay has ended: {job.state}")
        local = self._tasks.get(job.id)
        if local is not None and not local.done():
            local.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await local
        else:
            # Another instance (or the CLI) runs it: it stops at its next heartbeat.
            await self.jobs.request_cancel(job.id, by=self._owner)
            await self.jobs.ended(job.id, CANCEL_WAIT_S)
        return self.jobs.get(job.id) or job

    def _latest(self, endpoint: Endpoint) -> ReplayJob:
        jobs = self.jobs.of_endpoint(endpoint.id)
        if not jobs:
            raise ApiError(404, "not_found", "this endpoint has never been replayed")
        return jobs[-1]
