"""Replay jobs under races, on the real broker, with two ingest replicas on the same topics: one
job per endpoint however many starts race, a cancel from any replica holds, a finished job
stays finished, a replica shutting down mid-job stops within a bound and leaves the job ended."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient
from aiokafka import AIOKafkaProducer
from structlog.testing import capture_logs

from services.ingest import replay_api
from services.ingest.app import REPLAYS
from shared.kafka import replay
from shared.kafka.clients import create_producer
from shared.kafka.service_base import ServiceBase
from shared.kafka.window import read_window
from shared.model.messages import REPLAY_STALE_AFTER_MS, ReplayJob, decode_envelope, encode
from shared.model.topics import Topics
from shared.ops.settings import Settings
from tests.integration.conftest import ACCOUNT_A, auth
from tests.support.attempts import dead_letter

pytestmark = pytest.mark.kafka

Client = TestClient[Any, Any]
LETTERS = 300
ROUNDS = 3
SINCE = (datetime.now(UTC) - timedelta(days=1)).isoformat()


@pytest.fixture(name="producer")
async def fixture_producer(settings: Settings) -> Any:
    producer = create_producer(settings)
    await producer.start()
    yield producer
    await producer.stop()


async def endpoint_with_letters(
    client: Client, settings: Settings, producer: AIOKafkaProducer, letters: int
) -> str:
    """A new endpoint of account A with ``letters`` dead letters in the DLQ."""
    response = await client.post(
        "/v1/endpoints", json={"url": "https://hooks.example.com/in"}, headers=auth(ACCOUNT_A)
    )
    endpoint_id: str = (await response.json())["id"]
    dlq = Topics(settings.topic_prefix).dlq
    sends = [
        await producer.send(
            dlq,
            key=endpoint_id.encode(),
            value=encode(dead_letter(endpoint_id, f"evt_{n}", [], account_id="acc_a")),
        )
        for n in range(letters)
    ]
    await asyncio.gather(*sends)
    return endpoint_id


def replay_path(endpoint_id: str) -> str:
    return f"/v1/endpoints/{endpoint_id}/replay"


async def start(client: Client, endpoint_id: str) -> tuple[int, dict[str, Any]]:
    response = await client.post(
        replay_path(endpoint_id), json={"since": SINCE}, headers=auth(ACCOUNT_A)
    )
    return response.status, await response.json()


async def until_ended(client: Client, endpoint_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        while True:
            response = await client.get(replay_path(endpoint_id), headers=auth(ACCOUNT_A))
            job: dict[str, Any] = await response.json()
            if job["state"] != "running":
                return job
            await asyncio.sleep(0.05)


async def replayed_webhook_ids(settings: Settings, endpoint_id: str) -> Counter[str]:
    """How often each of the endpoint's letters went back into delivery (the first tier)."""
    tier = Topics(settings.topic_prefix).retry(settings.retry_schedule_s[0])
    sent: Counter[str] = Counter()
    async for record in read_window(settings, tier, 0):
        envelope = decode_envelope(record.value or b"")
        if envelope.endpoint_id == endpoint_id and envelope.replay_id is not None:
            sent[envelope.webhook_id] += 1
    return sent


async def started_mid_job(client: Client, endpoint_id: str) -> str:
    """Start a replay on ``client``; its id once it is past its first heartbeats, in the
    middle of its letters."""
    status, job = await start(client, endpoint_id)
    assert status == 202, job
    jobs = client.app[REPLAYS].jobs
    async with asyncio.timeout(10):
        while (running := jobs.get(job["id"])) is None or running.replayed == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    job_id: str = job["id"]
    return job_id


def details(body: dict[str, Any]) -> dict[str, str]:
    return {detail["field"]: detail["problem"] for detail in body["error"]["details"]}


async def test_two_starts_racing_on_two_replicas_give_one_job_and_one_409(
    ingest: Client, replica: Client, settings: Settings, producer: AIOKafkaProducer
) -> None:
    for round_ in range(ROUNDS):
        endpoint_id = await endpoint_with_letters(ingest, settings, producer, LETTERS)

        answers = await asyncio.gather(start(ingest, endpoint_id), start(replica, endpoint_id))

        statuses = sorted(status for status, _ in answers)
        assert statuses == [202, 409], (round_, answers)
        (job,) = [body for status, body in answers if status == 202]
        (refused,) = [body for status, body in answers if status == 409]
        assert refused["error"]["code"] == "replay_running"
        assert details(refused)["replay.id"] == job["id"]
        assert "replay.replayed" in details(refused)
        ended = await until_ended(ingest, endpoint_id)
        assert ended["id"] == job["id"]
        assert ended["state"] == "completed", ended
        sent = await replayed_webhook_ids(settings, endpoint_id)
        assert len(sent) == LETTERS, round_
        assert set(sent.values()) == {1}, round_


@pytest.fixture(name="slow_jobs")
def fixture_slow_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs that take seconds (each letter's hand-off awaited alone) and look for a cancel
    often: a cancel then really lands in the middle of one."""
    monkeypatch.setattr(replay, "SEND_BATCH", 1)
    monkeypatch.setattr(replay, "REPLAY_HEARTBEAT_MS", 20)


@pytest.mark.usefixtures("slow_jobs")
async def test_a_cancel_from_the_other_replica_stops_the_job_for_good(
    ingest: Client,
    replica: Client,
    base: ServiceBase,
    replica_base: ServiceBase,
    settings: Settings,
    producer: AIOKafkaProducer,
) -> None:
    letters = 2_000
    endpoint_id = await endpoint_with_letters(ingest, settings, producer, letters)
    await started_mid_job(ingest, endpoint_id)

    cancelled = await replica.delete(replay_path(endpoint_id), headers=auth(ACCOUNT_A))

    body = await cancelled.json()
    assert cancelled.status == 200, body
    assert body["state"] == "cancelled"
    assert body["replayed"] < letters
    await asyncio.sleep(0.2)  # many heartbeats' worth: none may bring it back
    for instance in (ingest, replica):
        await instance.app[REPLAYS].jobs.read_to_end()
        assert (await until_ended(instance, endpoint_id))["state"] == "cancelled"
    sent = await replayed_webhook_ids(settings, endpoint_id)
    assert len(sent) == body["replayed"]


async def test_a_stale_heartbeat_after_the_end_leaves_the_job_finished_everywhere(
    ingest: Client, replica: Client, settings: Settings, producer: AIOKafkaProducer
) -> None:
    endpoint_id = await endpoint_with_letters(ingest, settings, producer, 3)
    status, started = await start(ingest, endpoint_id)
    assert status == 202, started
    assert (await until_ended(ingest, endpoint_id))["state"] == "completed"
    finished = ingest.app[REPLAYS].jobs.get(started["id"])
    assert finished is not None

    # A heartbeat of the job as it was while running, written after its end (a slow owner).
    stale = msgspec.structs.replace(
        finished, state="running", finished_at_ms=None, updated_at_ms=int(time.time() * 1000)
    )
    await write_job(settings, producer, stale)

    for instance in (ingest, replica):
        await instance.app[REPLAYS].jobs.read_to_end()
        response = await instance.get(replay_path(endpoint_id), headers=auth(ACCOUNT_A))
        assert (await response.json())["state"] == "completed"
    # The endpoint is free: a new job starts (and ends before the test: nothing left running).
    again, _ = await start(replica, endpoint_id)
    assert again == 202
    assert (await until_ended(replica, endpoint_id))["state"] == "completed"


async def write_job(settings: Settings, producer: AIOKafkaProducer, job: ReplayJob) -> None:
    topic = Topics(settings.topic_prefix).replays
    await producer.send_and_wait(topic, key=job.id.encode(), value=encode(job))


@pytest.mark.usefixtures("slow_jobs")
async def test_a_replica_shutting_down_mid_job_records_the_cancel_within_the_bound(
    ingest: Client, replica: Client, settings: Settings, producer: AIOKafkaProducer
) -> None:
    letters = 2_000
    endpoint_id = await endpoint_with_letters(ingest, settings, producer, letters)
    job_id = await started_mid_job(replica, endpoint_id)

    async with asyncio.timeout(replay_api.SHUTDOWN_WAIT_S):
        await replica.close()  # the app's cleanup, as services.ingest runs it at shutdown

    jobs = ingest.app[REPLAYS].jobs
    await jobs.read_to_end()
    ended = jobs.get(job_id)
    assert ended is not None
    assert ended.state == "cancelled"
    assert ended.replayed < letters


@pytest.mark.usefixtures("slow_jobs")
async def test_a_replica_whose_writes_hang_still_shuts_down_and_its_job_reads_interrupted(
    ingest: Client,
    replica: Client,
    replica_base: ServiceBase,
    settings: Settings,
    producer: AIOKafkaProducer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint_id = await endpoint_with_letters(ingest, settings, producer, 2_000)
    job_id = await started_mid_job(replica, endpoint_id)

    async def unanswered(*_: Any, **__: Any) -> None:
        await asyncio.Event().wait()  # as aiokafka's send on a producer stopped under it

    # The run's next heartbeat, then its end, wait for ever.
    monkeypatch.setattr(replica_base.producer, "send_and_wait", unanswered)
    with capture_logs() as logs:
        async with asyncio.timeout(replay_api.SHUTDOWN_WAIT_S):
            await replica.close()

    unwritten = [line for line in logs if line["event"] == "replay_end_unwritten"]
    assert [line["job_id"] for line in unwritten] == [job_id]
    jobs = ingest.app[REPLAYS].jobs
    await jobs.read_to_end()
    last = jobs.get(job_id)
    assert last is not None
    assert last.state == "running"  # its last heartbeat: no end was written
    assert last.state_at(last.updated_at_ms + REPLAY_STALE_AFTER_MS + 1) == "interrupted"
