"""``clickhook``: parse the command line, run one command, turn failures into one line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from aiokafka.errors import KafkaConnectionError, KafkaError

from shared.cli import dlq, endpoints, replay, topics
from shared.cli.base import CliError, Parser
from shared.model.errors import SettingsError
from shared.ops.logging import configure_logging
from shared.ops.settings import load_settings

PROG = "clickhook"
EPILOG = (
    "Settings come from the environment, as for the services: CLICKHOOK_KAFKA_BOOTSTRAP "
    "(default localhost:9092), CLICKHOOK_TOPIC_PREFIX, CLICKHOOK_RETRY_SCHEDULE, … "
    "Times: RFC 3339 (2026-11-27T10:00:00Z), a date (2026-11-27, midnight UTC), an age "
    "(30m, 24h, 7d: that long ago), now, today or yesterday (midnight UTC)."
)
EXIT_FAILED = 1


def parser() -> argparse.ArgumentParser:
    root = Parser(
        prog=PROG,
        description="Operator tools for clickhook: dead letters, replay, topics, endpoints.",
        epilog=EPILOG,
    )
    root.add_argument(
        "-v", "--verbose", action="store_true", help="log what the Kafka client does (stderr)"
    )
    commands = root.add_subparsers(
        dest="command", required=True, metavar="{dlq,replay,topics,endpoints}"
    )
    dlq.add_commands(commands)
    replay.add_commands(commands)
    topics.add_commands(commands)
    endpoints.add_commands(commands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        return _failed(str(exc))
    # Output is stdout's; logs go to stderr, and only errors unless asked for more.
    configure_logging("console", "info" if args.verbose else "error", stream=sys.stderr)
    try:
        asyncio.run(args.run(settings, args))
    except CliError as exc:
        return _failed(str(exc), exc.exit_status)
    except BrokenPipeError:
        return _stdout_gone()
    except (KafkaConnectionError, OSError) as exc:
        where = f"{settings.kafka_bootstrap} (CLICKHOOK_KAFKA_BOOTSTRAP)"
        return _failed(f"cannot reach the broker at {where}: {exc}")
    except KafkaError as exc:
        return _failed(f"the broker at {settings.kafka_bootstrap} refused: {exc!r}")
    except KeyboardInterrupt:
        return 130  # Ctrl-C: what the shell expects; a replay was recorded as cancelled
    return 0


def _failed(message: str, status: int = EXIT_FAILED) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return status


def _stdout_gone() -> int:
    """``clickhook … | head``: the reader left; stop quietly, as Unix tools do."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 0
