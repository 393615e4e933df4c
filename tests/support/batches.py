"""Kafka record batches (format 2) as bytes, and the ways tests break them.

Each way keeps the batch's length, so it can be applied in place to a batch as the broker
stored it in a segment file (``corrupt_stored_batch``): the broker refuses every one of these at
produce time, so on disk is the only place a test can put them.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c

CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
MAGIC_AT = 16
CRC_AT = 17
ATTRIBUTES_AT = 21
LAST_OFFSET_DELTA_AT = 23
HEADER_BYTES = 61
OFFSET_AND_LENGTH = struct.Struct(">qi")

Corruption = Callable[[bytearray], None]


def batch_bytes(values: list[bytes], *, codec: str, base_offset: int = 0) -> bytearray:
    builder = DefaultRecordBatchBuilder(2, CODECS[codec], 0, -1, -1, -1, 1 << 20)
    for delta, value in enumerate(values):
        builder.append(delta, timestamp=None, key=b"lnk_9", value=value, headers=[])
    batch = bytearray(builder.build())
    struct.pack_into(">q", batch, 0, base_offset)  # not covered by the CRC
    return batch


def fix_crc(batch: bytearray) -> None:
    struct.pack_into(">I", batch, CRC_AT, calc_crc32c(bytes(batch[ATTRIBUTES_AT:])))


def garbled_payload(batch: bytearray) -> None:
    """Records (compressed or not) that do not decode, under a valid CRC."""
    for at in range(HEADER_BYTES + 2, len(batch), 3):
        batch[at] ^= 0x5A
    fix_crc(batch)


def broken_crc(batch: bytearray) -> None:
    batch[-1] ^= 0xFF


def unknown_codec(batch: bytearray) -> None:
    attributes = struct.unpack_from(">h", batch, ATTRIBUTES_AT)[0]
    struct.pack_into(">h", batch, ATTRIBUTES_AT, (attributes & ~0x07) | 0x05)
    fix_crc(batch)


def unknown_magic(batch: bytearray) -> None:
    batch[MAGIC_AT] = 7


CORRUPTIONS: dict[str, Corruption] = {
    "garbled_payload": garbled_payload,
    "broken_crc": broken_crc,
    "unknown_codec": unknown_codec,
    "unknown_magic": unknown_magic,
}


def stored_batches(segment: bytes) -> Iterator[tuple[int, int, int]]:
    """(position, base offset, size) of each batch in a segment file."""
    position = 0
    while position + OFFSET_AND_LENGTH.size <= len(segment):
        base_offset, length = OFFSET_AND_LENGTH.unpack_from(segment, position)
        size = OFFSET_AND_LENGTH.size + length
        yield position, base_offset, size
        position += size


def corrupt_stored_batch(partition_dir: Path, base_offset: int, corruption: Corruption) -> None:
    """Break the batch starting at ``base_offset`` in the partition's segment files, in place
    (the broker reads segments through the page cache, so its next fetch serves the change)."""
    for segment_path in sorted(partition_dir.glob("*.log")):
        segment = segment_path.read_bytes()
        for position, found, size in stored_batches(segment):
            if found == base_offset:
                batch = bytearray(segment[position : position + size])
                corruption(batch)
                assert len(batch) == size
                with segment_path.open("r+b") as file:
                    file.seek(position)
                    file.write(batch)
                return
    raise AssertionError(f"no batch at offset {base_offset} in {partition_dir}")


def broker_partition_dir(bootstrap: str, topic: str, partition: int) -> Path:
    """Where a broker that deploy/local/kafka.sh started keeps the partition's segments."""
    port = bootstrap.split(",", maxsplit=1)[0].rsplit(":", 1)[1]
    cache = Path(os.environ.get("CLICKHOOK_CACHE_DIR", Path.home() / ".cache" / "clickhook"))
    properties = (cache / f"run-{port}" / "server.properties").read_text()
    [log_dirs] = [
        line.removeprefix("log.dirs=")
        for line in properties.splitlines()
        if line.startswith("log.dirs=")
    ]
    return Path(log_dirs.split(",", maxsplit=1)[0]) / f"{topic}-{partition}"
