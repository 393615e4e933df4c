"""Operator commands: `python -m services.retry dlq` and `python -m services.retry replay`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime

from shared.kafka.clients import create_producer
from shared.kafka.dead_letters import count_dead_letters, replay
from shared.ops.settings import Settings, load_settings


def _utc(text: str) -> datetime:
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset, e.g. Z")
    return when.astimezone(UTC)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m services.retry")
    commands = root.add_subparsers(dest="command")
    dlq = commands.add_parser("dlq", help="count dead letters by endpoint and reason")
    dlq.add_argument("--since", type=_utc, help="only those that died at or after this time")
    again = commands.add_parser("replay", help="put an endpoint's dead letters back into delivery")
    again.add_argument("--endpoint", required=True, help="endpoint id, ep_…")
    again.add_argument(
        "--since", type=_utc, required=True, help="RFC 3339 time, e.g. 2026-11-27T00:00:00Z"
    )
    again.add_argument("--until", type=_utc, help="RFC 3339 time (default: now)")
    return root


async def _dlq(settings: Settings, since: datetime | None) -> None:
    since_ms = int(since.timestamp() * 1000) if since else 0
    counts = await count_dead_letters(settings, since_ms)
    print(f"{'endpoint':<32} {'reason':<20} {'count':>8}")
    for (endpoint_id, reason), count in sorted(counts.items()):
        print(f"{endpoint_id:<32} {reason:<20} {count:>8}")
    print(f"{'total':<53} {sum(counts.values()):>8}")


async def _replay(
    settings: Settings, endpoint_id: str, since: datetime, until: datetime | None
) -> None:
    producer = create_producer(settings)
    await producer.start()
    try:
        report = await replay(
            settings,
            producer,
            endpoint_id,
            int(since.timestamp() * 1000),
            int(until.timestamp() * 1000) if until else None,
        )
    finally:
        await producer.stop()
    print(
        f"endpoint {endpoint_id}: {report.matched} dead letters in the window, "
        f"{report.replayed} replayed, {report.already_delivered} already delivered"
    )


def run_cli(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    settings = load_settings()
    if args.command == "dlq":
        asyncio.run(_dlq(settings, args.since))
    elif args.command == "replay":
        asyncio.run(_replay(settings, args.endpoint, args.since, args.until))
    else:
        parser().print_help(sys.stderr)
        return 2
    return 0
