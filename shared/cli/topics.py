"""``clickhook topics tail|create``: look at a topic's records, decoded; create the topics.

``tail`` prints one JSON line per record. Values of clickhook's own topics are decoded with
the model's decoders (endpoints without their secrets); any other value, or one that does not
decode, is shown as base64. Names are given without ``CLICKHOOK_TOPIC_PREFIX``: the settings'
prefix is put in front, as the services do.
"""

from __future__ import annotations

import argparse
import base64
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared.cli.base import (
    TIME_HELP,
    CliError,
    UsageError,
    time_arg,
    verb_group,
    write_json_line,
)
from shared.kafka.clients import (
    Record,
    create_consumer,
    ensure_topics,
    topic_specs,
)
from shared.kafka.metadata import partitions_when_ready, topic_exists
from shared.kafka.window import read_to_ends
from shared.model import topics as names
from shared.model.errors import InvalidInput
from shared.model.messages import (
    decode_attempt,
    decode_dead_letter,
    decode_endpoint,
    decode_envelope,
    decode_json,
    decode_replay,
)
from shared.model.times import rfc3339_ms, to_ms
from shared.ops.process import close_quietly
from shared.ops.settings import Settings

FOLLOW_POLL_MS = 500
DEFAULT_LAST = 10

Decoder = Callable[[bytes], Any]


def _endpoint_view(raw: bytes) -> Any:
    return decode_endpoint(raw).public_view()  # never print secrets


DECODERS: Mapping[str, Decoder] = {
    names.CLICKS: decode_json,
    names.CLICKS_INVALID: decode_json,  # often not JSON at all: then base64
    names.ENDPOINTS: _endpoint_view,
    names.DLQ: decode_dead_letter,
    names.ATTEMPTS: decode_attempt,
    names.REPLAYS: decode_replay,
}


def decoder_for(name: str) -> Decoder | None:
    """The decoder of a topic (named without prefix), or None for a topic not clickhook's."""
    if name.startswith(names.RETRY_PREFIX):
        return decode_envelope
    return DECODERS.get(name)


def _text_or_base64(raw: bytes, field: str) -> dict[str, Any]:
    try:
        return {field: raw.decode()}
    except UnicodeDecodeError:
        return {f"{field}_base64": base64.b64encode(raw).decode()}


def record_view(record: Record, decode: Decoder | None) -> dict[str, Any]:
    """One record as a JSON-ready object: where, when, key, headers and the value."""
    view: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": rfc3339_ms(record.timestamp),
    }
    view.update(_text_or_base64(record.key, "key") if record.key is not None else {"key": None})
    view["headers"] = {
        name: (value.decode(errors="replace") if value is not None else None)
        for name, value in record.headers
    }
    raw: bytes | None = record.value
    if raw is None:
        view["value"] = None  # a tombstone
    elif decode is None:
        view["value_base64"] = base64.b64encode(raw).decode()
    else:
        try:
            view["value"] = decode(raw)
        except (msgspec.DecodeError, InvalidInput, UnicodeDecodeError) as exc:
            view["value_base64"] = base64.b64encode(raw).decode()
            view["decode_error"] = str(exc)
    return view


async def _start_offsets(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], args: argparse.Namespace
) -> dict[TopicPartition, int]:
    starts = await consumer.beginning_offsets(partitions)
    ends = await consumer.end_offsets(partitions)
    if args.from_beginning:
        return dict(starts)
    if args.since is not None:
        found = await consumer.offsets_for_times(dict.fromkeys(partitions, to_ms(args.since)))
        return {tp: found[tp].offset if found.get(tp) else ends[tp] for tp in partitions}
    return {tp: max(starts[tp], ends[tp] - args.last) for tp in partitions}


async def tail(settings: Settings, args: argparse.Namespace) -> None:
    topic = settings.topic_prefix + args.topic
    if not await topic_exists(settings, topic):
        raise UsageError(
            f"no topic {topic} (names are given without the prefix; "
            f"clickhook's: {', '.join(sorted(DECODERS))}, webhook.retry.*)"
        )
    partitions = await partitions_when_ready(settings, topic)
    if not partitions:
        raise CliError(f"no topic {topic} (names are given without the prefix)")
    decode = decoder_for(args.topic)
    consumer = create_consumer(settings, group_id=None)
    await consumer.start()
    try:
        consumer.assign(partitions)
        for tp, offset in (await _start_offsets(consumer, partitions, args)).items():
            consumer.seek(tp, offset)
        ends = await consumer.end_offsets(partitions)
        async for record in read_to_ends(consumer, ends):
            if args.follow or record.offset < ends[TopicPartition(record.topic, record.partition)]:
                write_json_line(record_view(record, decode))
        while args.follow:
            batches = await consumer.getmany(timeout_ms=FOLLOW_POLL_MS)
            for records in batches.values():
                for record in records:
                    write_json_line(record_view(record, decode))
    finally:
        await close_quietly("tail consumer", consumer.stop())


async def create(settings: Settings, _: argparse.Namespace) -> None:
    """Create the missing topics, with the settings' partitions, replication and configs."""
    wanted = topic_specs(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    await ensure_topics(settings, wanted)
    for spec in wanted:
        state = "exists" if spec.name in existing else "created"
        print(f"{state:8} {spec.name}  partitions={spec.num_partitions}")


def add_commands(commands: Any) -> None:
    verbs = verb_group(
        commands,
        "topics",
        help="look at a topic's records (tail), create the topics (create)",
        description="clickhook's topics: decoded records, and topic creation.",
        verbs="tail,create",
    )
    command = verbs.add_parser(
        "tail",
        help="a topic's records as JSON lines (the last 10 of each partition by default)",
        description="Prints records as JSON lines: topic, partition, offset, timestamp, key, "
        "headers and the value, decoded for clickhook's topics (clicks, clicks.invalid, "
        "webhook.endpoints without secrets, webhook.retry.*, webhook.dlq, webhook.attempts, "
        "webhook.replays), base64 otherwise.",
    )
    command.add_argument("topic", help="a topic name without the prefix, e.g. webhook.dlq")
    start = command.add_mutually_exclusive_group()
    start.add_argument(
        "--from-beginning", action="store_true", help="every record the topic still holds"
    )
    start.add_argument(
        "--since", type=time_arg, metavar="TIME", help=f"records written since: {TIME_HELP}"
    )
    start.add_argument(
        "-n",
        "--last",
        type=_count,
        default=DEFAULT_LAST,
        metavar="N",
        help=f"the last N records of each partition (default {DEFAULT_LAST})",
    )
    command.add_argument(
        "-f", "--follow", action="store_true", help="then keep printing new records (Ctrl-C ends)"
    )
    command.set_defaults(run=tail)
    creating = verbs.add_parser(
        "create",
        help="create the missing topics (what the Kubernetes topics Job runs)",
        description="Creates every topic clickhook uses that is missing, with "
        "CLICKHOOK_TOPIC_PARTITIONS, CLICKHOOK_TOPIC_REPLICATION and the topics' configs; "
        "existing topics are left as they are.",
    )
    creating.set_defaults(run=create)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value
