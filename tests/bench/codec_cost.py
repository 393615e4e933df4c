"""What each codec of ``CLICKHOOK_KAFKA_COMPRESSION`` costs the attempt log by itself (issue
26): batches of the dispatcher's attempt records at fan-out 100 (each click's delivery to 100
endpoints: the same body, its own signature and ids), filled to the audit producer's batch
size (``AUDIT_BATCH_BYTES``) and built by aiokafka's record batch builder with that codec, as
its sender does on the event loop. No broker, no network: the codec's own work, and how
long one batch holds the event loop.

Prints, per codec, the records in a batch, its size built, the time to build it (median of
``--repeat``) in ms per batch and in µs per record, and that time less ``none``'s: what the
codec adds to each delivery (the dispatcher spends about 0.25 ms of CPU per delivery at
fan-out 100, docs/performance.md).

    python -m tests.bench.codec_cost [--repeat 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime

import msgspec
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from shared.kafka.clients import AUDIT_BATCH_BYTES
from shared.model.envelopes import first_envelope
from shared.model.formats import build_request
from shared.model.messages import LOGGED_BODY_CHARS, AttemptRecord, validate_click
from shared.ops.settings import COMPRESSIONS, Compression
from tests.support.clicks import make_click
from tests.support.endpoints import endpoint_to

FANOUT = 100
CLICKS = 30  # more records than one batch holds
# Kafka's codec ids in a record batch's attributes.
CODEC_IDS: dict[Compression, int] = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def attempt_records() -> list[bytes]:
    """One attempt record per delivery, encoded as the dispatcher writes it."""
    now = datetime.now(UTC)
    endpoints = [
        endpoint_to(f"https://hooks.example.com/{n}", endpoint_id=f"ep_{n:04d}")
        for n in range(FANOUT)
    ]
    records = []
    for c in range(CLICKS):
        click = validate_click(make_click(f"evt_bench{c:04d}"), now=now)
        for endpoint in endpoints:
            envelope = first_envelope(endpoint, click)
            body, headers = build_request(
                endpoint, envelope.event, webhook_id=envelope.webhook_id, timestamp_s=0, now=now
            )
            record = AttemptRecord(
                webhook_id=envelope.webhook_id,
                event_id=click.id,
                endpoint_id=endpoint.id,
                account_id=endpoint.account_id,
                attempt=1,
                at_ms=int(now.timestamp() * 1000),
                duration_ms=1.234,
                outcome="success",
                status=200,
                request_headers=headers,
                request_body=body[:LOGGED_BODY_CHARS].decode("utf-8", errors="replace"),
            )
            records.append(msgspec.json.encode(record))
    return records


def build(codec: Compression, records: list[bytes]) -> tuple[int, int, float]:
    """Records in one full batch, its size built, and the seconds the build took."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=CODEC_IDS[codec],
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=AUDIT_BATCH_BYTES,
    )
    count = 0
    for offset, value in enumerate(records):
        if builder.append(offset, timestamp=None, key=None, value=value, headers=[]) is None:
            break
        count = offset + 1
    started = time.perf_counter()
    built = builder.build()
    return count, len(built), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.codec_cost", description=__doc__)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    records = attempt_records()
    print(f"attempt record: {statistics.mean(map(len, records)):,.0f} bytes on average")
    baseline_us = 0.0
    for codec in COMPRESSIONS:
        runs = [build(codec, records) for _ in range(args.repeat)]
        count, size, _ = runs[0]
        seconds = statistics.median(run[2] for run in runs)
        per_record_us = seconds / count * 1e6
        baseline_us = baseline_us or per_record_us
        print(
            f"{codec:7} {count} records, {size:>8,} bytes built, {seconds * 1e3:6.2f} ms per "
            f"batch, {per_record_us:6.2f} µs per record (+{per_record_us - baseline_us:.2f})"
        )


if __name__ == "__main__":
    main()
