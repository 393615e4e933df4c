"""structlog, configured once per process: JSON in production, console in development."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

import orjson
import structlog

from shared.model.messages import DeliveryEnvelope
from shared.ops.settings import LogFormat

_delivery_ids: ContextVar[dict[str, object] | None] = ContextVar("delivery_ids", default=None)


def bind_delivery(envelope: DeliveryEnvelope) -> None:
    """Every line logged from here on in the current task carries this delivery's ids.

    Call it only in a task that carries one delivery (asyncio gives each task a copy of the
    context, so siblings never see each other's ids and nothing needs undoing). One
    ContextVar per delivery instead of structlog's one per key: this runs thousands of
    times a second.
    """
    _delivery_ids.set(
        {
            "event_id": envelope.event_id,
            "endpoint_id": envelope.endpoint_id,
            "webhook_id": envelope.webhook_id,
            "attempt": envelope.attempts_made + 1,
        }
    )


def _merge_delivery_ids(
    _: structlog.typing.WrappedLogger, __: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    ids = _delivery_ids.get()
    if ids is not None:
        for key, value in ids.items():
            event_dict.setdefault(key, value)
    return event_dict


def configure_logging(log_format: LogFormat, level: str = "info") -> None:
    numeric_level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared_processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        _merge_delivery_ids,
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
