"""Clicks from the producers shorteners run, with every codec Kafka has (issue 22).

One run for the module, on one partition of ``clicks``: librdkafka (kcat) and the Java client
each write one batch per codec (gzip, snappy, lz4, zstd), with garbage records between valid
clicks and a click without ``id``; between them, four batches that are then broken on the
broker's disk (a corrupt payload, a CRC mismatch, an unknown codec, an unknown magic byte), as
no producer can write them. Only then does the dispatcher start, as a subprocess: every valid
click reaches the loopback receiver, signed; every garbage record and every broken batch is in
``clicks.invalid``; the dispatcher commits to the end of the partition and never stops.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord
from standardwebhooks.webhooks import Webhook

from shared.model.topics import DISPATCHER_GROUP, HEADER_REASON, HEADER_SOURCE, Topics
from tests.e2e.conftest import ACCOUNT_ID, ACCOUNT_TOKEN, PUBLISH_TOKEN, Pipeline
from tests.e2e.test_bad_records import read_all, wait_committed
from tests.support.batches import CORRUPTIONS, broker_partition_dir, corrupt_stored_batch
from tests.support.clicks import make_click
from tests.support.receiver import Receiver
from tests.support.services import ROOT, ServiceProcess, launch, service_env

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

PARTITION = 0
CODECS = ("gzip", "snappy", "lz4", "zstd")
SETTLE_S = 60.0
JAVA_PRODUCER = ROOT / "tests" / "e2e" / "producers" / "ClickProducer.java"
# What the Java producer needs of the broker's jars (kafka.sh fetched them).
JAVA_JARS = ("kafka-clients-", "lz4-java-", "snappy-java-", "zstd-jni-", "slf4j-api-")


def click_line(event_id: str | None, note: str = "") -> str:
    click = make_click(event_id, account_id=ACCOUNT_ID, note=note)
    return "lnk_9|" + orjson.dumps(click).decode()


def producer_lines(producer: str, codec: str) -> list[str]:
    """key|value lines: valid clicks, garbage between them, and a click without an id."""
    name = f"{producer}-{codec}"
    return [
        click_line(f"evt_{name}-1"),
        f"garbage-{name}-text|not a click at all",
        click_line(None, note=f"no id from {name}"),
        f'garbage-{name}-invalid|{{"type": "link.clicked", "link": {{"id": "{name}"}}}}',
        click_line(f"evt_{name}-2"),
    ]


def expected_ids(producer: str) -> set[str]:
    return {f"evt_{producer}-{codec}-{n}" for codec in CODECS for n in (1, 2)}


def garbage_keys(producer: str) -> set[bytes]:
    return {
        f"garbage-{producer}-{codec}-{kind}".encode()
        for codec in CODECS
        for kind in ("text", "invalid")
    }


def produce_with_kcat(bootstrap: str, topic: str) -> None:
    for codec in CODECS:
        subprocess.run(
            [
                *("kcat", "-b", bootstrap, "-P", "-t", topic, "-p", str(PARTITION)),
                *("-z", codec, "-K", "|", "-X", "linger.ms=1000"),
            ],
            input="\n".join(producer_lines("kcat", codec)).encode(),
            check=True,
            timeout=60,
        )


def java_classpath() -> str:
    libs = sorted(Path.home().glob(".cache/clickhook/kafka-*/libs"))
    assert libs, "no Kafka jars: deploy/local/kafka.sh start fetches them"
    jars = [jar for jar in sorted(libs[-1].glob("*.jar")) if jar.name.startswith(JAVA_JARS)]
    return ":".join(str(jar) for jar in jars)


def produce_with_java(bootstrap: str, topic: str) -> None:
    # The Java producer writes these once per codec, with "{codec}" replaced by its name.
    lines = producer_lines("java", "{codec}")
    subprocess.run(
        [
            *("java", "-cp", java_classpath(), str(JAVA_PRODUCER)),
            *(bootstrap, topic, str(PARTITION), *CODECS),
        ],
        input="\n".join(lines).encode(),
        check=True,
        capture_output=True,
        timeout=120,
    )


async def produce_doomed_batches(bootstrap: str, topic: str) -> dict[str, int]:
    """One zstd batch of two clicks per way of breaking one; their base offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type="zstd")
    await producer.start()
    offsets: dict[str, int] = {}
    try:
        for name in CORRUPTIONS:
            sent = [
                await producer.send(
                    topic,
                    orjson.dumps(make_click(f"evt_doomed-{name}-{n}", account_id=ACCOUNT_ID)),
                    key=b"lnk_9",
                    partition=PARTITION,
                )
                for n in (1, 2)
            ]
            offsets[name] = (await sent[0]).offset
            await sent[1]
    finally:
        await producer.stop()
    return offsets


@dataclass(frozen=True)
class Run:
    end_offset: int
    committed: int | None
    invalid: list[ConsumerRecord]
    delivered: dict[str, dict[str, object]]
    unsigned: list[str]
    doomed: dict[str, int]
    clicks_topic: str
    dispatcher: ServiceProcess
    logs: str


@pytest_asyncio.fixture(name="run", scope="module", loop_scope="module")
async def fixture_run(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Run]:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    topics = Topics(prefix)
    log_dir = tmp_path_factory.mktemp("any_producer")
    env = service_env(
        kafka_bootstrap,
        prefix,
        CLICKHOOK_API_KEYS=f"{PUBLISH_TOKEN}:publish,{ACCOUNT_TOKEN}:account:{ACCOUNT_ID}",
    )
    receiver = Receiver()
    await receiver.start()
    services = await launch(("ingest",), env, log_dir)
    session = aiohttp.ClientSession()
    try:
        pipeline = Pipeline(kafka_bootstrap, prefix, services, session)
        secret = (await pipeline.create_endpoint(receiver.url()))["secret"]
        produce_with_kcat(kafka_bootstrap, topics.clicks)
        doomed = await produce_doomed_batches(kafka_bootstrap, topics.clicks)
        produce_with_java(kafka_bootstrap, topics.clicks)
        partition_dir = broker_partition_dir(kafka_bootstrap, topics.clicks, PARTITION)
        for name, offset in doomed.items():
            corrupt_stored_batch(partition_dir, offset, CORRUPTIONS[name])

        services |= await launch(("dispatcher",), env, log_dir)
        end = await partition_end(kafka_bootstrap, topics.clicks)
        group = topics.group(DISPATCHER_GROUP)
        committed = await wait_committed(kafka_bootstrap, group, topics.clicks, end, SETTLE_S)
        verifier = Webhook(secret)
        delivered: dict[str, dict[str, object]] = {}
        unsigned: list[str] = []
        for request in receiver.received:
            try:
                body = verifier.verify(request.body, request.headers)
            except Exception:
                unsigned.append(request.headers.get("webhook-id", "?"))
                continue
            delivered[body["data"]["id"]] = body["data"]
        yield Run(
            end_offset=end,
            committed=committed,
            invalid=await read_all(kafka_bootstrap, topics.clicks_invalid),
            delivered=delivered,
            unsigned=unsigned,
            doomed=doomed,
            clicks_topic=topics.clicks,
            dispatcher=services["dispatcher"],
            logs=pipeline.logs(),
        )
    finally:
        await session.close()
        for service in services.values():
            service.terminate()
        await receiver.stop()


async def partition_end(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(topic, PARTITION)
        ends: dict[TopicPartition, int] = await consumer.end_offsets([tp])
        return ends[tp]
    finally:
        await consumer.stop()


@pytest.mark.parametrize("producer", ["kcat", "java"])
def test_every_valid_click_of_every_codec_is_delivered_signed(run: Run, producer: str) -> None:
    assert not run.unsigned, run.unsigned
    assert expected_ids(producer) <= set(run.delivered), run.logs


@pytest.mark.parametrize("producer", ["kcat", "java"])
def test_a_click_without_id_gets_one_from_its_position(run: Run, producer: str) -> None:
    for codec in CODECS:
        [event_id] = [
            event_id
            for event_id, data in run.delivered.items()
            if data.get("note") == f"no id from {producer}-{codec}"
        ]
        prefix = f"evt_{run.clicks_topic}-{PARTITION}-"
        assert event_id.startswith(prefix)
        assert event_id.removeprefix(prefix).isdigit()


@pytest.mark.parametrize("producer", ["kcat", "java"])
def test_every_garbage_record_is_in_clicks_invalid(run: Run, producer: str) -> None:
    kept = {record.key for record in run.invalid}
    assert garbage_keys(producer) <= kept, run.logs


def test_every_broken_batch_is_in_clicks_invalid_with_its_place(run: Run) -> None:
    sources = {
        dict(record.headers)[HEADER_SOURCE].decode(): dict(record.headers)[HEADER_REASON]
        for record in run.invalid
        if record.key is None
    }
    for offset in run.doomed.values():
        source = f"{run.clicks_topic}/{PARTITION}/{offset}-{offset + 1}"
        assert source in sources, (sources, run.logs)
        assert sources[source].startswith(b"undecodable batch"), sources[source]


def test_no_click_of_a_broken_batch_is_delivered(run: Run) -> None:
    assert not [event_id for event_id in run.delivered if event_id.startswith("evt_doomed")]


def test_the_dispatcher_commits_to_the_end_and_never_stops(run: Run) -> None:
    assert run.committed == run.end_offset, run.logs
    assert run.dispatcher.process is not None
    assert run.dispatcher.process.poll() is None, run.logs
    assert "background_task_failed" not in run.logs
