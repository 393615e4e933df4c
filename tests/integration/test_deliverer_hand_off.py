"""The deliverer against the real broker and a real receiver: what follows a hand-off never
fails the delivery, a replay's old history never disables an endpoint, and a delivery's trace
context goes with its request and its hand-offs.

The endpoint store is the real one (its writes go through the broker); where a test needs its
write to fail, that one method is replaced.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from shared.delivery.deliverer import Deliverer
from shared.delivery.http_client import WebhookClient
from shared.delivery.sender import Sender
from shared.kafka.endpoint_store import WriteContended
from shared.kafka.service_base import ServiceBase
from shared.model.envelopes import first_envelope
from shared.model.messages import (
    AttemptRecord,
    DeliveryEnvelope,
    Endpoint,
    decode_dead_letter,
    decode_envelope,
    validate_click,
)
from shared.model.topics import Topics
from shared.model.trace_context import TraceContext, from_record
from tests.support.clicks import make_click
from tests.support.endpoints import endpoint_to
from tests.support.receiver import Receiver
from tests.support.topics import read_records

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(60)]

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
DAY_MS = 86_400_000
# Long enough for a record that would follow to be read; no speed is asserted.
QUIET_S = 3.0

MakeDeliverer = Callable[..., Deliverer]


@pytest.fixture(name="make_deliverer")
async def fixture_make_deliverer(base: ServiceBase) -> AsyncIterator[MakeDeliverer]:
    client = WebhookClient(LOOPBACK, timeout_s=5.0)

    def make(**settings: Any) -> Deliverer:
        return Deliverer(
            dataclasses.replace(base.settings, **settings),
            service="test",
            producer=base.producer,
            attempt_log=None,
            sender=Sender(client),
            endpoints=base.endpoints,
        )

    yield make
    await client.close()


async def registered(base: ServiceBase, receiver: Receiver, path: str) -> Endpoint:
    return await base.endpoints.create(
        endpoint_to(receiver.url(path), endpoint_id=f"ep_{path.strip('/')}")
    )


def delivery_to(endpoint: Endpoint, event_id: str) -> DeliveryEnvelope:
    click = validate_click(make_click(event_id), now=datetime.now(UTC))
    return first_envelope(endpoint, click)


async def records_of(base: ServiceBase, topic: str, webhook_id: str) -> list[bytes]:
    """Every value of ``topic`` for ``webhook_id`` (waits ``QUIET_S`` for one more)."""
    records = await read_records(base.settings.kafka_bootstrap, topic, 10**6, timeout_s=QUIET_S)
    return [r.value for r in records if r.value is not None and webhook_id.encode() in r.value]


async def contended(*_args: Any, **_kwargs: Any) -> Endpoint | None:
    raise WriteContended("ep", 5)


# --- B: nothing after a hand-off fails the delivery -------------------------------------


async def test_a_contended_auto_disable_after_the_hand_off_sends_nothing_twice(
    base: ServiceBase,
    make_deliverer: MakeDeliverer,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Failing "for long enough" at once; the disable's write loses to other writers."""
    endpoint = await registered(base, receiver, "/failing")
    receiver.respond = lambda _request, _n: 500
    monkeypatch.setattr(base.endpoints, "update", contended)
    deliverer = make_deliverer(disable_after_s=0.0)
    envelope = delivery_to(endpoint, "evt_contended")

    await deliverer.deliver(endpoint, envelope)  # completes: the caller commits the record

    assert len(receiver.on_path("/failing")) == 1
    tier = Topics(base.settings.topic_prefix).retry(base.settings.retry_schedule_s[0])
    handed_off = await records_of(base, tier, envelope.webhook_id)
    assert [decode_envelope(value).attempts_made for value in handed_off] == [1]


async def test_a_contended_disable_on_410_dead_letters_once(
    base: ServiceBase,
    make_deliverer: MakeDeliverer,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint = await registered(base, receiver, "/gone")
    receiver.respond = lambda _request, _n: 410
    monkeypatch.setattr(base.endpoints, "update", contended)
    envelope = delivery_to(endpoint, "evt_gone")

    await make_deliverer().deliver(endpoint, envelope)

    assert len(receiver.on_path("/gone")) == 1
    letters = await records_of(base, Topics(base.settings.topic_prefix).dlq, envelope.webhook_id)
    assert [decode_dead_letter(value).reason for value in letters] == ["endpoint_gone"]


# --- C: a replay's old history never disables the endpoint -------------------------------


def failed_days_ago(envelope: DeliveryEnvelope, days: list[int], **run: Any) -> DeliveryEnvelope:
    """The envelope with a history of failures that began ``days`` ago (oldest first)."""
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    history = [
        AttemptRecord(
            webhook_id=envelope.webhook_id,
            event_id=envelope.event_id,
            endpoint_id=envelope.endpoint_id,
            account_id=envelope.account_id,
            attempt=n + 1,
            at_ms=now_ms - day * DAY_MS,
            duration_ms=1.0,
            outcome="connect_error",
            **run,
        )
        for n, day in enumerate(days)
    ]
    return msgspec.structs.replace(envelope, attempts=history, attempts_made=len(history))


@pytest.mark.parametrize(
    "history_run",
    [
        pytest.param({}, id="letters-older-than-the-run-fields"),
        pytest.param({"endpoint_version": "current"}, id="same-endpoint-version"),
    ],
)
async def test_replayed_letters_failing_once_leave_the_endpoint_enabled(
    base: ServiceBase,
    make_deliverer: MakeDeliverer,
    receiver: Receiver,
    history_run: dict[str, Any],
) -> None:
    """Letters whose history began 6 days ago (disable after: 5 days), replayed to a receiver
    that answers its first request 503 while it takes the burst in."""
    endpoint = await registered(base, receiver, "/replayed")
    receiver.respond = lambda _request, n: 503 if n == 0 else 200
    run = dict.fromkeys(history_run, endpoint.version)
    deliverer = make_deliverer()
    letters = [
        failed_days_ago(delivery_to(endpoint, f"evt_old_{n}"), [6, 5], **run) for n in range(3)
    ]

    for letter in letters:
        await deliverer.deliver(endpoint, msgspec.structs.replace(letter, replay_id="rpl_1"))
    await deliverer.finish_disables(timeout_s=30)  # none should have started

    assert [r.status for r in receiver.on_path("/replayed")] == [503, 200, 200]
    current = base.endpoints.table.get(endpoint.id)
    assert current is not None
    assert current.enabled, current.disabled_reason


async def test_a_live_delivery_failing_for_days_under_this_version_still_disables(
    base: ServiceBase, make_deliverer: MakeDeliverer, receiver: Receiver
) -> None:
    """The control: the same history, of this run (no replay), is a streak of 6 days."""
    endpoint = await registered(base, receiver, "/down")
    receiver.respond = lambda _request, _n: 503
    envelope = failed_days_ago(
        delivery_to(endpoint, "evt_down"), [6, 5], endpoint_version=endpoint.version
    )

    deliverer = make_deliverer()
    await deliverer.deliver(endpoint, envelope)  # done: the disable follows in a task of its own
    await deliverer.finish_disables(timeout_s=30)

    current = base.endpoints.table.get(endpoint.id)
    assert current is not None
    assert not current.enabled


# --- the trace context -------------------------------------------------------------------

TRACE = TraceContext("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "vendor=1")


async def test_a_deliverys_trace_context_goes_on_its_request_and_its_hand_off_records(
    base: ServiceBase, make_deliverer: MakeDeliverer, receiver: Receiver
) -> None:
    """Tracing off (no collector in these tests): the context is carried on as it came."""
    endpoint = await registered(base, receiver, "/traced")
    receiver.respond = lambda _request, _n: 500
    deliverer = make_deliverer()
    envelope = delivery_to(endpoint, "evt_traced")

    await deliverer.deliver(endpoint, envelope, TRACE)
    await deliverer.dead_letter(envelope, "exhausted", trace=TRACE)

    [request] = receiver.on_path("/traced")
    assert (request.headers["traceparent"], request.headers["tracestate"]) == (
        TRACE.traceparent,
        TRACE.tracestate,
    )
    topics = Topics(base.settings.topic_prefix)
    for topic in (topics.retry(base.settings.retry_schedule_s[0]), topics.dlq):
        [record] = [
            r
            for r in await read_records(base.settings.kafka_bootstrap, topic, 1)
            if r.value is not None and envelope.webhook_id.encode() in r.value
        ]
        assert from_record(record.headers) == TRACE, topic
