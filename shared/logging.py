"""structlog, configured once per process: JSON in production, console in development."""

from __future__ import annotations

import logging
import sys

import orjson
import structlog

from shared.settings import LogFormat


def configure_logging(log_format: LogFormat, level: str = "info") -> None:
    numeric_level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared_processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    if log_format == "json":
        renderer: structlog.typing.Processor = structlog.processors.JSONRenderer(
            serializer=orjson.dumps
        )
        logger_factory: structlog.typing.WrappedLogger = structlog.BytesLoggerFactory(
            sys.stdout.buffer
        )
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
        logger_factory = structlog.PrintLoggerFactory(sys.stdout)
    structlog.configure(
        processors=[*shared_processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=logger_factory,
        cache_logger_on_first_use=True,
    )
    # aiokafka and aiohttp log through the standard library; keep their warnings visible.
    logging.basicConfig(level=max(numeric_level, logging.WARNING), stream=sys.stderr)
