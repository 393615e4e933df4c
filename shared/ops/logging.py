"""structlog, configured once per process: JSON in production, console in development.

The standard library's records (aiokafka, aiohttp, asyncio) are rendered by the same processors
and renderer (structlog's ``ProcessorFormatter``), so every line of a service has one format.
aiokafka reports transient broker states (a partition leader being elected, a group coordinator
starting, a connection not up yet) at ERROR although it retries them itself: those are logged at
INFO or WARNING with a short explanation and without a traceback (``broker_state``).

A failed write (stdout closed, a broken pipe) drops the line: logging never stops the process.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TextIO

import orjson
import structlog

from shared.model.messages import DeliveryEnvelope
from shared.ops.settings import LogFormat

_delivery: ContextVar[DeliveryEnvelope | None] = ContextVar("delivery", default=None)


def bind_delivery(envelope: DeliveryEnvelope) -> None:
    """Every line logged from here on in the current task carries this delivery's ids.

    Call it only in a task that carries one delivery (asyncio gives each task a copy of the
    context, so siblings never see each other's ids and nothing needs undoing). One
    ContextVar per delivery instead of structlog's one per key, holding the (frozen) envelope
    itself: this runs thousands of times a second, and the ids are read only for the few lines
    a delivery logs.
    """
    _delivery.set(envelope)


def _merge_delivery_ids(
    _: structlog.typing.WrappedLogger, __: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    envelope = _delivery.get()
    if envelope is not None:
        event_dict.setdefault("event_id", envelope.event_id)
        event_dict.setdefault("endpoint_id", envelope.endpoint_id)
        event_dict.setdefault("webhook_id", envelope.webhook_id)
        event_dict.setdefault("attempt", envelope.attempts_made + 1)
    return event_dict


# --- transient broker states ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerState:
    """A state aiokafka logs as an error but retries by itself, recognised by its text."""

    event: str
    level: int
    explanation: str
    signs: tuple[str, ...]


BROKER_STATES = (
    BrokerState(
        "kafka_leader_not_ready",
        logging.INFO,
        "a partition has no leader yet (a topic just created, or a broker restarting); "
        "the client retries",
        ("NotLeaderForPartitionError", "NotLeaderOrFollowerError", "LeaderNotAvailableError"),
    ),
    BrokerState(
        "kafka_coordinator_not_ready",
        logging.INFO,
        "the consumer group coordinator is starting (a fresh broker creates its offsets topic "
        "first); the client retries",
        (
            "GroupCoordinatorNotAvailableError",
            "CoordinatorNotAvailableError",
            "NotCoordinatorForGroupError",
            "NotCoordinatorError",
            "GroupLoadInProgressError",
            "CoordinatorLoadInProgressError",
            "Marking the coordinator dead",
        ),
    ),
    BrokerState(
        "kafka_rebalancing",
        logging.INFO,
        "the consumer group is rebalancing (a member joined or left); the client rejoins",
        ("RebalanceInProgressError",),
    ),
    BrokerState(
        "kafka_topic_not_ready",
        logging.INFO,
        "a topic created a moment ago is not in the client's metadata yet; the client retries",
        ("UnknownTopicOrPartitionError", "not found in cluster metadata"),
    ),
    BrokerState(
        "kafka_node_not_ready",
        logging.INFO,
        "the connection to a broker is still being set up; the client retries",
        ("NodeNotReadyError",),
    ),
    BrokerState(
        "kafka_unreachable",
        logging.WARNING,
        "the broker does not answer (not started yet, restarting, or a wrong address); "
        "the client retries",
        (
            "Unable connect to",
            "Unable to update metadata",
            "Unable to request metadata",
            "Connect call failed",
            "Connection refused",
            "KafkaConnectionError",
        ),
    ),
)


def broker_state(record: logging.LogRecord) -> BrokerState | None:
    """The transient broker state an aiokafka record reports, if it reports one."""
    if not record.name.startswith("aiokafka"):
        return None
    text = record.getMessage()
    if record.exc_info and record.exc_info[0] is not None:
        text += " " + record.exc_info[0].__name__
    for state in BROKER_STATES:
        if any(sign in text for sign in state.signs):
            return state
    return None


# Where a reclassified record keeps the fields it adds to its line.
_FIELDS_ATTR = "clickhook_fields"


# While a broker is down aiokafka reports it several times a second: one line per state and
# logger in this many seconds, carrying how many were left out since the last.
REPEAT_EVERY_S = 5.0


class _BrokerStateFilter(logging.Filter):
    """Rewrites aiokafka's transient states to our event, level and explanation, thins out
    their repeats, and drops records below the configured level (a rewritten one may have
    fallen under it)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self._level = level
        self._last: dict[tuple[str, str], tuple[float, int]] = {}  # -> (logged at, left out)

    def filter(self, record: logging.LogRecord) -> bool:
        state = broker_state(record)
        if state is None:
            return record.levelno >= self._level
        if state.level < self._level:
            return False
        key = (state.event, record.name)
        logged_at, left_out = self._last.get(key, (-REPEAT_EVERY_S, 0))
        if record.created - logged_at < REPEAT_EVERY_S:
            self._last[key] = (logged_at, left_out + 1)
            return False
        self._last[key] = (record.created, 0)
        fields: dict[str, object] = {
            "explanation": state.explanation,
            "detail": record.getMessage(),
        }
        if left_out:
            fields["repeated"] = left_out
        record.levelno = state.level
        record.levelname = logging.getLevelName(state.level)
        record.msg, record.args = state.event, ()
        record.exc_info = record.exc_text = None
        setattr(record, _FIELDS_ATTR, fields)
        return True


def _add_record_fields(
    _: structlog.typing.WrappedLogger, __: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    record = event_dict.get("_record")
    fields = getattr(record, _FIELDS_ATTR, None)
    if fields:
        event_dict.update(fields)
    return event_dict


# --- output --------------------------------------------------------------------------------


class _Lines:
    """Where rendered lines go: one stream, one lock, and a write that cannot fail.

    A line that cannot be written (stdout closed, a reader gone) is dropped: a service must
    keep working, and stop on SIGTERM, whatever happens to its output.
    """

    def __init__(self, stream: TextIO, *, binary: bool) -> None:
        self._binary = binary
        target: Any = stream.buffer if binary else stream
        self._write: Callable[[Any], object] = target.write
        self._flush: Callable[[], object] = target.flush
        self._lock = threading.Lock()

    def write(self, line: str | bytes) -> None:
        if self._binary:
            data: str | bytes = (line.encode() if isinstance(line, str) else line) + b"\n"
        else:
            data = (line.decode() if isinstance(line, bytes) else line) + "\n"
        # A closed or broken stream (OSError, or ValueError once closed): the line is lost,
        # not the process.
        with contextlib.suppress(OSError, ValueError), self._lock:
            self._write(data)
            self._flush()


class _LineLogger:
    """structlog's wrapped logger: every method writes the rendered line."""

    def __init__(self, lines: _Lines) -> None:
        self._lines = lines

    def msg(self, message: str | bytes) -> None:
        self._lines.write(message)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


def _never_failing(
    base: type[structlog.typing.FilteringBoundLogger], lines: _Lines, binary: bool
) -> type[structlog.typing.FilteringBoundLogger]:
    """structlog's bound logger, whose calls cannot raise: a line that cannot be rendered (a
    value the serializer refuses) becomes a ``log_failed`` line naming the event instead."""

    class NeverFailing(base):  # type: ignore[valid-type,misc]  # a class made at run time
        def _proxy_to_logger(self, method_name: str, event: str | None = None, **kw: Any) -> Any:
            try:
                return super()._proxy_to_logger(method_name, event, **kw)
            except Exception as exc:  # noqa: BLE001 - the caller's work matters more than its log
                failed = {"event": "log_failed", "level": "error", "lost_event": str(event)}
                failed["error"] = repr(exc)
                lines.write(orjson.dumps(failed) if binary else " ".join(failed.values()))
                return None

    return NeverFailing


class _StdlibHandler(logging.Handler):
    """Hands stdlib records to the same lines, rendered by a ``ProcessorFormatter``."""

    def __init__(self, lines: _Lines, level: int) -> None:
        super().__init__(logging.NOTSET)
        self._lines = lines
        self.addFilter(_BrokerStateFilter(level))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.write(self.format(record))
        except Exception:  # noqa: BLE001 - a record that cannot be rendered is not worth a crash
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - stdlib's name
        """Nothing: the stdlib default prints a traceback to stderr, which may be gone too."""


def _dumps_text(obj: Any, **kwargs: Any) -> str:
    return orjson.dumps(obj, **kwargs).decode()


def configure_logging(
    log_format: LogFormat, level: str = "info", *, stream: TextIO | None = None
) -> None:
    """Configure structlog and the standard library's logging; lines go to ``stream``
    (stdout by default; the CLI passes stderr, keeping stdout for its output)."""
    numeric_level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    out = stream if stream is not None else sys.stdout
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
        stdlib_renderer: structlog.typing.Processor = structlog.processors.JSONRenderer(
            serializer=_dumps_text
        )
    else:
        renderer = stdlib_renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    binary = log_format == "json"
    lines = _Lines(out, binary=binary)
    filtering = structlog.make_filtering_bound_logger(numeric_level)
    structlog.configure(
        processors=[*shared_processors, renderer],
        wrapper_class=_never_failing(filtering, lines, binary),
        logger_factory=lambda *_: _LineLogger(lines),
        cache_logger_on_first_use=True,
    )
    handler = _StdlibHandler(lines, numeric_level)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                _add_record_fields,
                *shared_processors,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                stdlib_renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)  # configured again (tests do): one handler, the newest
    root.addHandler(handler)
    # aiokafka and aiohttp say a lot at INFO (every rebalance step): their warnings and errors
    # are what an operator needs; the transient states among them come out at INFO.
    root.setLevel(max(numeric_level, logging.WARNING))
    logging.raiseExceptions = False
