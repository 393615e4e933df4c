"""Fetched data as aiokafka's fetcher reads it, through the check of shared/kafka/undecodable:
every codec decodes; a batch that does not is skipped and reported, and what surrounds it is
read as usual."""

from __future__ import annotations

import struct

import pytest
from aiokafka import TopicPartition
from aiokafka.consumer import fetcher
from prometheus_client import REGISTRY

import shared.kafka  # noqa: F401  (installs the check, as every service does by importing it)
from shared.kafka.undecodable import UndecodableBatch, collecting
from tests.support.batches import (
    CODECS,
    CORRUPTIONS,
    LAST_OFFSET_DELTA_AT,
    Corruption,
    batch_bytes,
    broken_crc,
)

TP = TopicPartition("clicks", 3)
READ_UNCOMMITTED = 0


def read(data: bytes, fetch_offset: int = 0) -> tuple[list[int], int]:
    """The offsets a consumer is handed, and where it fetches next."""
    records = fetcher.PartitionRecords(
        TP, fetcher.MemoryRecords(data), None, fetch_offset, None, None, True, READ_UNCOMMITTED
    )
    offsets = [record.offset for record in records]
    return offsets, records.next_fetch_offset


def three_batches(middle: Corruption | None, codec: str = "snappy") -> bytes:
    """Offsets 0-1, 2-4 (broken by ``middle``), 5-6."""
    first = batch_bytes([b"a", b"b"], codec=codec, base_offset=0)
    second = batch_bytes([b"c", b"d", b"e"], codec=codec, base_offset=2)
    third = batch_bytes([b"f", b"g"], codec=codec, base_offset=5)
    if middle is not None:
        middle(second)
    return bytes(first + second + third)


def skipped_count(topic: str = "clicks") -> float:
    value = REGISTRY.get_sample_value("clickhook_undecodable_batches_total", {"topic": topic})
    return value or 0.0


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_every_codec_is_read(codec: str) -> None:
    with collecting() as skipped:
        assert read(three_batches(None, codec)) == ([0, 1, 2, 3, 4, 5, 6], 7)
    assert skipped == []


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_an_undecodable_batch_is_skipped_and_the_batches_around_it_are_read(
    corruption: str, codec: str
) -> None:
    before = skipped_count()
    with collecting() as skipped:
        assert read(three_batches(CORRUPTIONS[corruption], codec)) == ([0, 1, 5, 6], 7)
    [batch] = skipped
    assert (batch.topic, batch.partition, batch.first_offset, batch.last_offset) == (
        "clicks",
        3,
        2,
        4,
    )
    assert batch.source == "clicks/3/2-4"
    assert batch.stored[:8] == struct.pack(">q", 2)
    assert skipped_count() == before + 1


@pytest.mark.parametrize(
    ("corruption", "reason"),
    [
        ("broken_crc", "CRC mismatch"),
        ("unknown_codec", "cannot decode: UnsupportedCodecError"),
        ("unknown_magic", "unknown magic byte 7"),
        ("garbled_payload", "cannot decode: DecompressionError"),
    ],
)
def test_the_reason_says_what_is_wrong(corruption: str, reason: str) -> None:
    with collecting() as skipped:
        read(three_batches(CORRUPTIONS[corruption]))
    assert skipped[0].reason.startswith(reason)


def test_a_last_batch_that_does_not_decode_moves_the_position_past_it() -> None:
    data = three_batches(None)[: -len(batch_bytes([b"f", b"g"], codec="snappy"))]
    data = data[: -len(batch_bytes([b"c", b"d", b"e"], codec="snappy"))]
    bad = batch_bytes([b"c", b"d", b"e"], codec="snappy", base_offset=2)
    broken_crc(bad)
    assert read(data + bytes(bad)) == ([0, 1], 5)


def test_a_bad_batch_read_from_inside_it_still_moves_forward() -> None:
    bad = batch_bytes([b"c", b"d", b"e"], codec="snappy", base_offset=2)
    broken_crc(bad)
    # A fetch from offset 4 returns the batch that holds it, from its base offset 2.
    assert read(bytes(bad), fetch_offset=4) == ([], 5)


def test_a_corrupt_header_never_skips_the_next_batch() -> None:
    first = batch_bytes([b"a", b"b"], codec="lz4", base_offset=0)
    # A delta that claims a million offsets, under a CRC that no longer matches.
    struct.pack_into(">i", first, LAST_OFFSET_DELTA_AT, 1_000_000)
    second = batch_bytes([b"c"], codec="lz4", base_offset=2)
    assert read(bytes(first + second)) == ([2], 3)


def test_an_impossible_length_skips_the_rest_of_the_data_one_offset_on() -> None:
    first = batch_bytes([b"a", b"b"], codec="gzip", base_offset=0)
    broken = bytearray(first)
    struct.pack_into(">qi", broken, 0, 2, 3)
    with collecting() as skipped:
        assert read(bytes(first + broken)) == ([0, 1], 3)
    assert skipped[0].reason == "impossible batch length 3"


def test_skips_are_collected_only_inside_the_block() -> None:
    before = skipped_count()
    with collecting() as skipped:
        pass
    read(three_batches(broken_crc))
    assert skipped == []
    assert skipped_count() == before + 1


def test_a_partial_last_batch_waits_for_the_next_fetch() -> None:
    data = three_batches(None)
    assert read(data[:-5]) == ([0, 1, 2, 3, 4], 5)


def test_the_record_set_is_aiokafkas_interface() -> None:
    records = fetcher.MemoryRecords(three_batches(None))
    assert records.has_next()
    assert records.size_in_bytes() == len(three_batches(None))
    assert isinstance(UndecodableBatch("t", 0, 1, 2, "r", b"").source, str)
