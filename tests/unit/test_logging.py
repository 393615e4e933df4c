"""Every line logged about a delivery carries its ids, and only that delivery's; the standard
library's records come out in the same format, transient broker states without alarm."""

from __future__ import annotations

import asyncio
import io
import logging
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any, TextIO, cast

import orjson
import pytest
import structlog
from aiokafka.errors import GroupCoordinatorNotAvailableError

from shared.model.messages import DeliveryEnvelope
from shared.ops.logging import REPEAT_EVERY_S, bind_delivery, configure_logging
from shared.ops.settings import LogFormat

Lines = Callable[[], list[dict[str, object]]]


def envelope(n: int) -> DeliveryEnvelope:
    return DeliveryEnvelope(
        webhook_id=f"msg_{n}",
        event_id=f"evt_{n}",
        endpoint_id=f"ep_{n}",
        account_id="acc_1",
        event={"id": f"evt_{n}"},
        attempts_made=0,
        tier=-1,
        due_at_ms=0,
    )


@pytest.fixture(name="lines")
def fixture_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[Lines]:
    """The JSON lines the services print, parsed."""
    written = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", types.SimpleNamespace(buffer=written))
    configure_logging("json")
    yield lambda: [orjson.loads(line) for line in written.getvalue().splitlines()]
    structlog.reset_defaults()


async def test_each_delivery_task_logs_its_own_ids_and_nothing_leaks_out(lines: Lines) -> None:
    log = structlog.get_logger("test")

    async def deliver(n: int) -> None:
        bind_delivery(envelope(n))
        await asyncio.sleep(0)  # the other delivery runs in between
        log.info("attempted", n=n)

    await asyncio.gather(deliver(1), deliver(2))
    log.info("outside")

    attempted = {line["n"]: line for line in lines() if line["event"] == "attempted"}
    outside = next(line for line in lines() if line["event"] == "outside")
    for n in (1, 2):
        ids = {key: attempted[n][key] for key in ("event_id", "endpoint_id", "webhook_id")}
        assert ids == {"event_id": f"evt_{n}", "endpoint_id": f"ep_{n}", "webhook_id": f"msg_{n}"}
        assert attempted[n]["attempt"] == 1
    assert "event_id" not in outside


# --- the standard library's records, in the same format --------------------------------------


def test_aiokafka_leader_election_is_logged_at_info_with_an_explanation(lines: Lines) -> None:
    logging.getLogger("aiokafka.consumer.fetcher").error(
        "Failed fetch offsets from %s: %s",
        1,
        "[Error 6] NotLeaderForPartitionError: TopicPartition(topic='clicks', partition=0)",
    )

    [line] = lines()
    assert line["level"] == "info"
    assert line["event"] == "kafka_leader_not_ready"
    assert "no leader yet" in str(line["explanation"])
    assert "NotLeaderForPartitionError" in str(line["detail"])
    assert line["logger"] == "aiokafka.consumer.fetcher"


def test_aiokafka_coordinator_error_with_traceback_is_one_info_line_without_it(
    lines: Lines,
) -> None:
    try:
        raise GroupCoordinatorNotAvailableError
    except GroupCoordinatorNotAvailableError:
        logging.getLogger("aiokafka.consumer.group_coordinator").exception("Coordinator failed")

    [line] = lines()
    assert (line["level"], line["event"]) == ("info", "kafka_coordinator_not_ready")
    assert "exception" not in line


def test_aiokafka_refused_connection_is_a_warning(lines: Lines) -> None:
    logging.getLogger("aiokafka.client").error(
        'Unable connect to "%s:%s": %s', "127.0.0.1", 9092, "[Errno 111] Connection refused"
    )

    [line] = lines()
    assert (line["level"], line["event"]) == ("warning", "kafka_unreachable")


def test_other_stdlib_records_keep_their_level_and_message_in_our_format(lines: Lines) -> None:
    logging.getLogger("aiohttp.server").error("Error handling request from %s", "127.0.0.1")

    [line] = lines()
    assert line["event"] == "Error handling request from 127.0.0.1"
    assert line["level"] == "error"
    assert line["logger"] == "aiohttp.server"
    assert str(line["timestamp"]).endswith("Z")


def test_stdlib_traceback_is_a_field_of_one_json_line(lines: Lines) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")

    [line] = lines()
    assert "ValueError: boom" in str(line["exception"])


def test_stdlib_info_is_below_the_threshold_for_library_loggers(lines: Lines) -> None:
    logging.getLogger("aiokafka.consumer.group_coordinator").info("Joined group")

    assert lines() == []


def test_a_rewritten_state_under_the_configured_level_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    written = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", types.SimpleNamespace(buffer=written))
    configure_logging("json", "warning")
    try:
        logging.getLogger("aiokafka.cluster").error("Topic %s not found in cluster metadata", "x")
    finally:
        structlog.reset_defaults()

    assert written.getvalue() == b""


class ClosedStream:
    """stdout after the reader went away: every write fails, text or bytes."""

    @property
    def buffer(self) -> ClosedStream:
        return self

    def write(self, _: Any) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    def isatty(self) -> bool:
        return False


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_a_broken_stdout_never_breaks_the_caller(log_format: LogFormat) -> None:
    configure_logging(log_format, stream=cast(TextIO, ClosedStream()))
    try:
        structlog.get_logger("test").warning("stop_requested", signal="SIGTERM")
        logging.getLogger("aiohttp.server").error("still fine")
    finally:
        structlog.reset_defaults()


def test_a_repeated_broker_state_is_logged_once_per_interval_with_the_count(
    lines: Lines,
) -> None:
    client = logging.getLogger("aiokafka.client")
    for _ in range(20):  # a broker down: aiokafka says so every few milliseconds
        client.error("Unable connect to node with id %s: %s", 1, "Connection refused")
    later = logging.LogRecord(
        "aiokafka.client", logging.ERROR, __file__, 1, "Unable connect to node with id 1", (), None
    )
    later.created += REPEAT_EVERY_S
    client.handle(later)

    logged = lines()
    assert [line["event"] for line in logged] == ["kafka_unreachable", "kafka_unreachable"]
    assert "repeated" not in logged[0]
    assert logged[1]["repeated"] == 19


def test_a_value_the_renderer_refuses_never_breaks_the_caller(lines: Lines) -> None:
    structlog.get_logger("test").info("counted", counts={("ep_1", "exhausted"): 3})

    [line] = lines()
    assert line["event"] == "log_failed"
    assert line["lost_event"] == "counted"
