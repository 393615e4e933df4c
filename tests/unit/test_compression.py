"""CLICKHOOK_KAFKA_COMPRESSION (issue 26): every producer the services create compresses its
batches with the configured codec, the transactional (fenced) writers' too."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from shared.kafka.clients import create_audit_producer, create_producer
from shared.kafka.fenced import FencedWriter
from shared.ops.settings import COMPRESSIONS, DEFAULT_COMPRESSION, Compression, Settings


def _codec(producer: Any) -> str | None:
    # aiokafka keeps the codec only on its record accumulator.
    codec: str | None = producer._compression_type
    return codec


async def _codecs(settings: Settings) -> list[str | None]:
    """The codec of each producer, never started (no broker needed), then closed."""
    reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    writer = FencedWriter(settings, "t", reader, client_id="test")
    producers = [
        create_producer(settings),
        create_audit_producer(settings),
        writer._transactional_producer(),
    ]
    codecs = [_codec(producer) for producer in producers]
    for producer in producers:
        await producer.stop()
    await reader.stop()
    return codecs


@pytest.mark.parametrize("codec", COMPRESSIONS)
async def test_every_producer_uses_the_configured_codec(codec: Compression) -> None:
    expected = None if codec == "none" else codec
    assert await _codecs(Settings(kafka_compression=codec)) == [expected] * 3


async def test_producers_compress_by_default() -> None:
    assert DEFAULT_COMPRESSION != "none"
    assert await _codecs(Settings()) == [DEFAULT_COMPRESSION] * 3
