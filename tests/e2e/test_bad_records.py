"""Records produced straight to ``clicks`` that no shortener should send.

One run for the module: ingest and dispatcher as subprocesses, every bad record below and
then valid clicks produced to one partition of ``clicks``, in that order. Each bad record must
land in ``clicks.invalid`` with its original bytes and a reason; the valid ones after them are
delivered, and the dispatcher's committed offset reaches the end of the partition (nothing is
stuck retrying forever behind the bad ones).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from shared.kafka.clients import MAX_MESSAGE_BYTES
from shared.kafka.metadata import partitions_when_ready
from shared.model.topics import DISPATCHER_GROUP, HEADER_REASON, HEADER_SOURCE, Topics
from shared.ops.settings import Settings
from tests.e2e.conftest import ACCOUNT_ID, ACCOUNT_TOKEN, PUBLISH_TOKEN, Pipeline
from tests.support.clicks import make_click
from tests.support.receiver import Receiver
from tests.support.services import ServiceProcess, launch, service_env

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

PARTITION = 0
SETTLE_TIMEOUT_S = 40.0


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def valid_json(event_id: str, **overrides: Any) -> bytes:
    return orjson.dumps(make_click(event_id, account_id=ACCOUNT_ID, **overrides))


# Each bad record is keyed by its name, so its copy in clicks.invalid can be found again.
BAD_RECORDS: dict[str, bytes | None] = {
    "garbage-bytes": bytes(range(256)) * 4,
    "empty": b"",
    "truncated-json": valid_json("evt_truncated")[:40],
    "wrong-types": orjson.dumps(
        {**make_click("evt_wrong_types", account_id=ACCOUNT_ID), "account_id": 42}
    ),
    "wrong-nested-type": orjson.dumps(
        {**make_click("evt_wrong_link", account_id=ACCOUNT_ID), "link": {"id": ["lnk_9"]}}
    ),
    "five-megabytes": valid_json("evt_five_mb", padding="x" * (5 * 1024 * 1024)),
    "null-value": None,
    "invalid-utf8": valid_json("evt_bad_utf8").replace(b"link.clicked", b"link.\xff\xfeclicked"),
    "nan": valid_json("evt_nan").replace(b'"campaign":', b'"nan":NaN,"campaign":'),
    "deeply-nested": nested(100_000),
    "json-array": orjson.dumps([make_click("evt_in_array", account_id=ACCOUNT_ID)]),
    "json-string": b'"link.clicked"',
}

# Valid clicks with an unknown field nested deep: up to the depth limit (64 levels, counting the
# event object) they are delivered; beyond it, up to where the JSON decoder itself gives up
# (~1000), they are set aside, never left retrying because their webhook body cannot be encoded.
DEEP_DELIVERED = 63
DEEP_VALID_DEPTHS = [DEEP_DELIVERED, 64, 500, *range(940, 1000, 8)]
GOOD_AFTER = ["evt_good_after_1", "evt_good_after_2"]
# Produced last, without an id: delivered with one derived from its position.
WITHOUT_ID = orjson.dumps(make_click(None, account_id=ACCOUNT_ID))


def deep_valid(depth: int) -> bytes:
    prefix = valid_json(f"evt_deep_{depth}")[:-1]
    return prefix + b',"deep":' + nested(depth) + b"}"


@dataclass(frozen=True)
class Run:
    produced: int
    committed: int | None
    invalid: dict[bytes | None, ConsumerRecord]
    delivered_ids: list[str]
    logs: str
    clicks_topic: str


async def start_services(bootstrap: str, prefix: str, log_dir: Path) -> dict[str, ServiceProcess]:
    """Ingest (it creates the topics), then the dispatcher; the retry service is not needed."""
    env = service_env(
        bootstrap,
        prefix,
        CLICKHOOK_API_KEYS=f"{PUBLISH_TOKEN}:publish,{ACCOUNT_TOKEN}:account:{ACCOUNT_ID}",
    )
    return await launch(("ingest", "dispatcher"), env, log_dir)


async def produce_in_order(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]]
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        max_request_size=MAX_MESSAGE_BYTES,  # the five-megabyte record
    )
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, key=key, value=value, partition=PARTITION)
    finally:
        await producer.stop()


async def committed_offset(bootstrap: str, group: str, topic: str) -> int | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    meta = offsets.get(TopicPartition(topic, PARTITION))
    return None if meta is None else int(meta.offset)


async def wait_committed(
    bootstrap: str, group: str, topic: str, end: int, timeout_s: float = SETTLE_TIMEOUT_S
) -> int | None:
    """The group's committed offset once it reaches ``end``, or as it is after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    committed = await committed_offset(bootstrap, group, topic)
    while committed != end and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        committed = await committed_offset(bootstrap, group, topic)
    return committed


async def read_all(bootstrap: str, topic: str) -> list[ConsumerRecord]:
    """Every record of ``topic`` present now (big ones included)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
        fetch_max_bytes=MAX_MESSAGE_BYTES * 2,
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        partitions = await partitions_when_ready(Settings(kafka_bootstrap=bootstrap), topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


@pytest_asyncio.fixture(name="run", scope="module", loop_scope="module")
async def fixture_run(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Run]:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    topics = Topics(prefix)
    receiver = Receiver()
    await receiver.start()
    services = await start_services(kafka_bootstrap, prefix, tmp_path_factory.mktemp("bad"))
    session = aiohttp.ClientSession()
    pipeline = Pipeline(kafka_bootstrap, prefix, services, session)
    try:
        await pipeline.create_endpoint(receiver.url())
        records = [(name.encode(), value) for name, value in BAD_RECORDS.items()]
        records += [(f"deep-{d}".encode(), deep_valid(d)) for d in DEEP_VALID_DEPTHS]
        records += [(b"lnk_9", valid_json(event_id)) for event_id in GOOD_AFTER]
        records += [(b"without-id", WITHOUT_ID)]
        await produce_in_order(kafka_bootstrap, topics.clicks, records)

        group = topics.group(DISPATCHER_GROUP)
        committed = await wait_committed(kafka_bootstrap, group, topics.clicks, len(records))

        invalid = await read_all(kafka_bootstrap, topics.clicks_invalid)
        yield Run(
            produced=len(records),
            committed=committed,
            invalid={record.key: record for record in invalid},
            delivered_ids=[orjson.loads(r.body)["data"]["id"] for r in receiver.received],
            logs=pipeline.logs(),
            clicks_topic=topics.clicks,
        )
    finally:
        await session.close()
        for service in services.values():
            service.terminate()
        await receiver.stop()


def reason_of(record: ConsumerRecord) -> str:
    reason: bytes = dict(record.headers)[HEADER_REASON]
    return reason.decode()


@pytest.mark.parametrize("name", BAD_RECORDS)
def test_bad_record_lands_in_clicks_invalid_with_its_original_bytes(run: Run, name: str) -> None:
    assert name.encode() in run.invalid, run.logs
    assert run.invalid[name.encode()].value == BAD_RECORDS[name]


EXPECTED_REASONS = {
    "garbage-bytes": "malformed JSON",
    "empty": "malformed JSON",
    "truncated-json": "malformed JSON",
    "wrong-types": "account_id",
    "wrong-nested-type": "link.id",
    "five-megabytes": "click too large",
    "null-value": "null record value",
    "invalid-utf8": "malformed JSON",
    "nan": "malformed JSON",
    "deeply-nested": "levels deep",
    "json-array": "expected a JSON object, got list",
    "json-string": "expected a JSON object, got str",
}


@pytest.mark.parametrize(("name", "reason"), EXPECTED_REASONS.items(), ids=EXPECTED_REASONS)
def test_bad_record_carries_a_reason_naming_its_problem(run: Run, name: str, reason: str) -> None:
    record = run.invalid.get(name.encode())
    assert record is not None, run.logs
    assert reason in reason_of(record)


def test_bad_record_carries_its_source_position(run: Run) -> None:
    record = run.invalid[b"null-value"]
    offset = list(BAD_RECORDS).index("null-value")
    source = dict(record.headers)[HEADER_SOURCE].decode()
    assert source.rsplit("/", 2)[1:] == [str(PARTITION), str(offset)]


def test_valid_clicks_produced_after_the_bad_records_are_delivered(run: Run) -> None:
    assert set(GOOD_AFTER) <= set(run.delivered_ids), run.logs


def test_a_click_without_id_is_delivered_with_an_id_from_its_position(run: Run) -> None:
    offset = run.produced - 1
    assert f"evt_{run.clicks_topic}-{PARTITION}-{offset}" in run.delivered_ids, run.logs


def test_no_bad_record_is_delivered(run: Run) -> None:
    bad_ids = {"evt_truncated", "evt_wrong_types", "evt_wrong_link", "evt_five_mb", "evt_nan"}
    assert bad_ids.isdisjoint(run.delivered_ids)


def test_click_nested_within_the_depth_limit_is_delivered(run: Run) -> None:
    assert f"evt_deep_{DEEP_DELIVERED}" in run.delivered_ids, run.logs


def test_click_nested_one_level_beyond_the_depth_limit_is_set_aside(run: Run) -> None:
    record = run.invalid.get(f"deep-{DEEP_DELIVERED + 1}".encode())
    assert record is not None, run.logs
    assert "levels deep" in reason_of(record)


def test_deeply_nested_valid_clicks_are_each_delivered_or_set_aside(run: Run) -> None:
    finished = {
        depth
        for depth in DEEP_VALID_DEPTHS
        if f"evt_deep_{depth}" in run.delivered_ids or f"deep-{depth}".encode() in run.invalid
    }
    assert finished == set(DEEP_VALID_DEPTHS), run.logs


def test_dispatcher_commits_past_every_bad_record(run: Run) -> None:
    assert run.committed == run.produced, run.logs
